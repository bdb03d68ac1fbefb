"""performance indexes: batch list order and panel counts, audit trail by record type

Revision ID: 7c3e9a14b2d5
Revises: 51a4107e6358
Create Date: 2026-11-25 15:25:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '7c3e9a14b2d5'
down_revision = '51a4107e6358'
branch_labels = None
depends_on = None


def upgrade():
    # The batch list, newest first (ORDER BY started_at DESC, id DESC LIMIT 25).
    op.create_index('ix_batches_started_at_id', 'batches', ['started_at', 'id'], unique=False)
    # The audit trail filtered by record type, newest first (entity_type = ? ORDER BY seq DESC).
    op.create_index('ix_audit_entries_entity_type_seq', 'audit_entries', ['entity_type', 'seq'], unique=False)
    # The batches panel's counts on every list page: passages awaiting verification, donors pending.
    op.create_index('ix_passages_verified_by_id', 'passages', ['verified_by_id'], unique=False)
    op.create_index('ix_donors_eligibility', 'donors', ['eligibility'], unique=False)
    op.create_index('ix_batches_status', 'batches', ['status'], unique=False)


def downgrade():
    op.drop_index('ix_batches_status', table_name='batches')
    op.drop_index('ix_donors_eligibility', table_name='donors')
    op.drop_index('ix_passages_verified_by_id', table_name='passages')
    op.drop_index('ix_audit_entries_entity_type_seq', table_name='audit_entries')
    op.drop_index('ix_batches_started_at_id', table_name='batches')
