"""How many entries the audit trail holds per record type and action, kept by a database
trigger in the transaction that appends each entry (rolled back with it), so that the trail's
pages filtered by record type or action show their total by adding a few counters instead of
reading hundreds of thousands of entries on every page.

Used by migrations (which keep their own literal copy of the SQL) and by ``create_all`` in
tests, so the counters are kept however the schema was built."""
from __future__ import annotations

from sqlalchemy import DDL, Table, event


def sqlite_statements() -> list[str]:
    return [
        "CREATE TRIGGER IF NOT EXISTS trg_audit_entries_count AFTER INSERT ON audit_entries "
        "BEGIN INSERT INTO audit_counts (entity_type, action, entries) VALUES (NEW.entity_type, NEW.action, 1) "
        "ON CONFLICT (entity_type, action) DO UPDATE SET entries = entries + 1; END",
    ]


def postgresql_statements() -> list[str]:
    # One statement-level trigger: a bulk insert adds each (type, action) once.
    return [
        "CREATE OR REPLACE FUNCTION labsys_count_audit_entries() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO audit_counts (entity_type, action, entries) "
        "SELECT entity_type, action, count(*) FROM appended GROUP BY entity_type, action "
        "ON CONFLICT (entity_type, action) DO UPDATE SET entries = audit_counts.entries + EXCLUDED.entries; "
        "RETURN NULL; END $$",
        "DROP TRIGGER IF EXISTS trg_audit_entries_count ON audit_entries",
        "CREATE TRIGGER trg_audit_entries_count AFTER INSERT ON audit_entries "
        "REFERENCING NEW TABLE AS appended FOR EACH STATEMENT EXECUTE FUNCTION labsys_count_audit_entries()",
    ]


def statements_for(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return sqlite_statements()
    if dialect == "postgresql":
        return postgresql_statements()
    raise RuntimeError(f"no audit counters for the {dialect} engine")


def keep_counts(entries: Table) -> None:
    """Install the counting trigger on the audit table when ``metadata.create_all`` creates it."""
    for dialect in ("sqlite", "postgresql"):
        for sql in statements_for(dialect):
            event.listen(entries, "after_create", DDL(sql.replace("%", "%%")).execute_if(dialect=dialect))
