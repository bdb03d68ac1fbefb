"""potency

Revision ID: 1d312c7b081c
Revises: f89df5cda7eb
Create Date: 2026-11-25 12:23:25.417176

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '1d312c7b081c'
down_revision = 'f89df5cda7eb'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('potency_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('assay_date', sa.Date(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('bv2_passage', sa.Integer(), nullable=False),
    sa.Column('lps_lot', sa.String(length=80), nullable=False),
    sa.Column('lps_ng_per_ml', sa.Float(), nullable=False),
    sa.Column('test_lots', sa.JSON(), nullable=False),
    sa.Column('reference_lot', sa.String(length=80), nullable=True),
    sa.Column('plate_format', sa.Integer(), nullable=False),
    sa.Column('pixel_size_um', sa.Float(), nullable=False),
    sa.Column('image_channel', sa.Integer(), nullable=True),
    sa.Column('measure', sa.String(length=40), nullable=False),
    sa.Column('is_validation', sa.Boolean(), nullable=False),
    sa.Column('parameter_set_name', sa.String(length=80), nullable=False),
    sa.Column('parameter_set_version', sa.Integer(), nullable=False),
    sa.Column('min_cells_per_field', sa.Integer(), nullable=False),
    sa.Column('max_replicate_cv_percent', sa.Float(), nullable=False),
    sa.Column('min_z_prime', sa.Float(), nullable=False),
    sa.Column('reference_min_inhibition', sa.Float(), nullable=True),
    sa.Column('reference_max_inhibition', sa.Float(), nullable=True),
    sa.Column('state', sa.Enum('draft', 'scoring', 'scored', 'reviewed', 'approved', 'invalid', name='potency_run_state', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('fields_total', sa.Integer(), nullable=False),
    sa.Column('fields_done', sa.Integer(), nullable=False),
    sa.Column('fields_failed', sa.Integer(), nullable=False),
    sa.Column('valid', sa.Boolean(), nullable=True),
    sa.Column('validity', sa.JSON(), nullable=True),
    sa.Column('z_prime', sa.Float(), nullable=True),
    sa.Column('lps_score', sa.Float(), nullable=True),
    sa.Column('unstim_score', sa.Float(), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("state <> 'approved' OR (valid = true AND approved_at IS NOT NULL)", name=op.f('ck_potency_runs_approved_only_when_valid')),
    sa.CheckConstraint('bv2_passage >= 0', name=op.f('ck_potency_runs_passage_not_negative')),
    sa.CheckConstraint('lps_ng_per_ml > 0', name=op.f('ck_potency_runs_lps_concentration_positive')),
    sa.CheckConstraint('plate_format IN (24, 48, 96)', name=op.f('ck_potency_runs_plate_format_known')),
    sa.ForeignKeyConstraint(['operator_id'], ['users.id'], name=op.f('fk_potency_runs_operator_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_runs')),
    sa.UniqueConstraint('code', name=op.f('uq_potency_runs_code'))
    )
    with op.batch_alter_table('potency_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_potency_runs_operator_id'), ['operator_id'], unique=False)

    op.create_table('potency_lot_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('lot_identifier', sa.String(length=80), nullable=False),
    sa.Column('role', sa.String(length=10), nullable=False),
    sa.Column('ratio', sa.String(length=20), nullable=False),
    sa.Column('well_count', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('cv_percent', sa.Float(), nullable=True),
    sa.Column('percent_inhibition', sa.Float(), nullable=True),
    sa.Column('relative_potency', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['potency_runs.id'], name=op.f('fk_potency_lot_results_run_id_potency_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_lot_results')),
    sa.UniqueConstraint('run_id', 'lot_identifier', 'ratio', name=op.f('uq_potency_lot_results_run_id_lot_identifier_ratio'))
    )
    with op.batch_alter_table('potency_lot_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_potency_lot_results_run_id'), ['run_id'], unique=False)

    op.create_table('potency_parameter_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('based_on_name', sa.String(length=80), nullable=False),
    sa.Column('based_on_version', sa.Integer(), nullable=False),
    sa.Column('source_run_id', sa.Integer(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('draft', 'approved', name='potency_parameter_set_state', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('proposed_by_id', sa.Integer(), nullable=False),
    sa.Column('proposed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version_counter', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['proposed_by_id'], ['users.id'], name=op.f('fk_potency_parameter_sets_proposed_by_id_users')),
    sa.ForeignKeyConstraint(['source_run_id'], ['potency_runs.id'], name=op.f('fk_potency_parameter_sets_source_run_id_potency_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_parameter_sets')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_potency_parameter_sets_name_version'))
    )
    op.create_table('potency_wells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('well', sa.String(length=4), nullable=False),
    sa.Column('condition', sa.Enum('empty', 'unstimulated', 'lps', 'test', 'reference', name='potency_well_condition', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('lot_identifier', sa.String(length=80), nullable=True),
    sa.Column('ratio', sa.String(length=20), nullable=True),
    sa.Column('replicate_group', sa.String(length=120), nullable=False),
    sa.CheckConstraint("condition NOT IN ('test', 'reference') OR (lot_identifier IS NOT NULL AND ratio IS NOT NULL)", name=op.f('ck_potency_wells_lot_wells_name_lot_and_ratio')),
    sa.ForeignKeyConstraint(['run_id'], ['potency_runs.id'], name=op.f('fk_potency_wells_run_id_potency_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_wells')),
    sa.UniqueConstraint('run_id', 'well', name=op.f('uq_potency_wells_run_id_well'))
    )
    with op.batch_alter_table('potency_wells', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_potency_wells_run_id'), ['run_id'], unique=False)

    op.create_table('potency_field_images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('well_id', sa.Integer(), nullable=False),
    sa.Column('field_number', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('original_filename', sa.String(length=255), nullable=False),
    sa.Column('byte_size', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('bit_depth', sa.Integer(), nullable=False),
    sa.Column('channel', sa.Integer(), nullable=True),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('excluded', sa.Boolean(), nullable=False),
    sa.Column('exclusion_reason', sa.Text(), nullable=True),
    sa.CheckConstraint('NOT excluded OR exclusion_reason IS NOT NULL', name=op.f('ck_potency_field_images_exclusion_has_reason')),
    sa.CheckConstraint('length(sha256) = 64', name=op.f('ck_potency_field_images_sha256_hex')),
    sa.ForeignKeyConstraint(['run_id'], ['potency_runs.id'], name=op.f('fk_potency_field_images_run_id_potency_runs')),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['users.id'], name=op.f('fk_potency_field_images_uploaded_by_id_users')),
    sa.ForeignKeyConstraint(['well_id'], ['potency_wells.id'], name=op.f('fk_potency_field_images_well_id_potency_wells')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_field_images')),
    sa.UniqueConstraint('well_id', 'field_number', name=op.f('uq_potency_field_images_well_id_field_number'))
    )
    with op.batch_alter_table('potency_field_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_potency_field_images_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_potency_field_images_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_potency_field_images_well_id'), ['well_id'], unique=False)

    op.create_table('potency_field_scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('cell_count', sa.Integer(), nullable=True),
    sa.Column('activated_count', sa.Integer(), nullable=True),
    sa.Column('activation_fraction', sa.Float(), nullable=True),
    sa.Column('median_area_um2', sa.Float(), nullable=True),
    sa.Column('algorithm_version', sa.String(length=40), nullable=False),
    sa.Column('parameter_set_name', sa.String(length=80), nullable=False),
    sa.Column('parameter_set_version', sa.Integer(), nullable=False),
    sa.Column('library_versions', sa.JSON(), nullable=False),
    sa.Column('overlay_sha256', sa.String(length=64), nullable=True),
    sa.Column('cells_sha256', sa.String(length=64), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('scored', 'failed')", name=op.f('ck_potency_field_scores_status_known')),
    sa.ForeignKeyConstraint(['image_id'], ['potency_field_images.id'], name=op.f('fk_potency_field_scores_image_id_potency_field_images')),
    sa.ForeignKeyConstraint(['run_id'], ['potency_runs.id'], name=op.f('fk_potency_field_scores_run_id_potency_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_potency_field_scores')),
    sa.UniqueConstraint('image_id', name=op.f('uq_potency_field_scores_image_id'))
    )
    with op.batch_alter_table('potency_field_scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_potency_field_scores_run_id'), ['run_id'], unique=False)



def downgrade():
    with op.batch_alter_table('potency_field_scores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_potency_field_scores_run_id'))

    op.drop_table('potency_field_scores')
    with op.batch_alter_table('potency_field_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_potency_field_images_well_id'))
        batch_op.drop_index(batch_op.f('ix_potency_field_images_sha256'))
        batch_op.drop_index(batch_op.f('ix_potency_field_images_run_id'))

    op.drop_table('potency_field_images')
    with op.batch_alter_table('potency_wells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_potency_wells_run_id'))

    op.drop_table('potency_wells')
    op.drop_table('potency_parameter_sets')
    with op.batch_alter_table('potency_lot_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_potency_lot_results_run_id'))

    op.drop_table('potency_lot_results')
    with op.batch_alter_table('potency_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_potency_runs_operator_id'))

    op.drop_table('potency_runs')
