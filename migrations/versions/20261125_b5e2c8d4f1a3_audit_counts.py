"""audit counts: entries per record type and action, kept by a trigger, for the filtered trail's totals

Revision ID: b5e2c8d4f1a3
Revises: a7d3e5f1c2b9
Create Date: 2026-11-25 18:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b5e2c8d4f1a3'
down_revision = 'a7d3e5f1c2b9'
branch_labels = None
depends_on = None

# Literal copies of labsys.audit.counts at this revision (a later change needs a new migration).
SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS trg_audit_entries_count AFTER INSERT ON audit_entries "
    "BEGIN INSERT INTO audit_counts (entity_type, action, entries) VALUES (NEW.entity_type, NEW.action, 1) "
    "ON CONFLICT (entity_type, action) DO UPDATE SET entries = entries + 1; END",
]
POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION labsys_count_audit_entries() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN INSERT INTO audit_counts (entity_type, action, entries) "
    "SELECT entity_type, action, count(*) FROM appended GROUP BY entity_type, action "
    "ON CONFLICT (entity_type, action) DO UPDATE SET entries = audit_counts.entries + EXCLUDED.entries; "
    "RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS trg_audit_entries_count ON audit_entries",
    "CREATE TRIGGER trg_audit_entries_count AFTER INSERT ON audit_entries "
    "REFERENCING NEW TABLE AS appended FOR EACH STATEMENT EXECUTE FUNCTION labsys_count_audit_entries()",
]


def upgrade():
    op.create_table(
        'audit_counts',
        sa.Column('entity_type', sa.String(length=80), nullable=False),
        sa.Column('action', sa.String(length=80), nullable=False),
        sa.Column('entries', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('entity_type', 'action', name=op.f('pk_audit_counts')),
    )
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        # No entry may be appended between the count below and the trigger taking over.
        op.execute("LOCK TABLE audit_entries IN SHARE MODE")
    op.execute("INSERT INTO audit_counts (entity_type, action, entries) "
               "SELECT entity_type, action, count(*) FROM audit_entries GROUP BY entity_type, action")
    for statement in SQLITE if dialect == 'sqlite' else POSTGRESQL:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS trg_audit_entries_count")
    else:
        op.execute("DROP TRIGGER IF EXISTS trg_audit_entries_count ON audit_entries")
        op.execute("DROP FUNCTION IF EXISTS labsys_count_audit_entries()")
    op.drop_table('audit_counts')
