"""Database triggers that make tables append-only on both engines.

Used by migrations (which must keep their own literal copy of the SQL when it changes) and by
``create_all`` in tests, so the guard exists however the schema was built."""
from __future__ import annotations

from sqlalchemy import DDL, Table, event


def sqlite_statements(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS trg_{table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER IF NOT EXISTS trg_{table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


def postgresql_statements(table: str) -> list[str]:
    return [
        "CREATE OR REPLACE FUNCTION labsys_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$",
        f"DROP TRIGGER IF EXISTS trg_{table}_no_change ON {table}",
        f"CREATE TRIGGER trg_{table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION labsys_refuse_change()",
        f"DROP TRIGGER IF EXISTS trg_{table}_no_truncate ON {table}",
        f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION labsys_refuse_change()",
    ]


def statements_for(dialect: str, table: str) -> list[str]:
    if dialect == "sqlite":
        return sqlite_statements(table)
    if dialect == "postgresql":
        return postgresql_statements(table)
    raise RuntimeError(f"no append-only guard for the {dialect} engine")


_GUARDED: set[str] = set()


def guarded_tables() -> set[str]:
    """Names of the tables declared append-only by the models."""
    return set(_GUARDED)


def make_append_only(table: Table) -> None:
    """Attach the guard to a table so ``metadata.create_all`` installs it (migrations must
    install it too; a test compares the two)."""
    _GUARDED.add(table.name)
    for dialect in ("sqlite", "postgresql"):
        for sql in statements_for(dialect, table.name):
            event.listen(table, "after_create", DDL(sql.replace("%", "%%")).execute_if(dialect=dialect))
