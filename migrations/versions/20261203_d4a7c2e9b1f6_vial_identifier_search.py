"""vial identifier search: a trigram index (SQLite FTS5, PostgreSQL pg_trgm) for terms inside identifiers

Revision ID: d4a7c2e9b1f6
Revises: b5e2c8d4f1a3
Create Date: 2026-12-03 15:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'd4a7c2e9b1f6'
down_revision = 'b5e2c8d4f1a3'
branch_labels = None
depends_on = None

# Literal copies of labsys.batches.search at this revision (a later change needs a new migration).
SQLITE = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS vial_identifier_trigrams USING fts5(identifier, content='vials', "
    "content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS trg_vials_identifier_search_insert AFTER INSERT ON vials BEGIN "
    "INSERT INTO vial_identifier_trigrams (rowid, identifier) VALUES (NEW.id, NEW.identifier); END",
    "CREATE TRIGGER IF NOT EXISTS trg_vials_identifier_search_update AFTER UPDATE OF identifier ON vials BEGIN "
    "INSERT INTO vial_identifier_trigrams (vial_identifier_trigrams, rowid, identifier) "
    "VALUES ('delete', OLD.id, OLD.identifier); "
    "INSERT INTO vial_identifier_trigrams (rowid, identifier) VALUES (NEW.id, NEW.identifier); END",
    "INSERT INTO vial_identifier_trigrams (vial_identifier_trigrams) VALUES ('rebuild')",
]
POSTGRESQL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
    "DO $$ DECLARE place text; BEGIN "
    "SELECT n.nspname INTO place FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_trgm'; "
    "EXECUTE format('CREATE INDEX IF NOT EXISTS ix_vials_identifier_trgm ON vials USING gin (identifier %I.gin_trgm_ops)', "
    "place); END $$",
]


def upgrade():
    for statement in SQLITE if op.get_bind().dialect.name == 'sqlite' else POSTGRESQL:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        for name in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS trg_vials_identifier_search_{name}")
        op.execute("DROP TABLE IF EXISTS vial_identifier_trigrams")
    else:
        op.execute("DROP INDEX IF EXISTS ix_vials_identifier_trgm")
