"""PostgreSQL: the app's least-privileged role cannot rewrite append-only tables, even if the
triggers were gone; SQLite has no roles, so there the triggers are the guard (tested elsewhere)."""
from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from labsys.audit.guards import guarded_tables
from labsys.audit.privileges import grant_statements


def test_grants_never_give_update_delete_or_truncate_on_append_only_tables():
    statements = grant_statements("labsys_app", ["audit_entries", "signatures", "users", "alembic_version"],
                                  {"audit_entries", "signatures"})
    for table in ("audit_entries", "signatures"):
        grants = [s for s in statements if s.startswith("GRANT") and f'"{table}"' in s]
        assert grants == [f'GRANT SELECT, INSERT ON "public"."{table}" TO labsys_app']
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."users" TO labsys_app' in statements
    with pytest.raises(ValueError):
        grant_statements("x; DROP TABLE users", [], set())


def test_the_app_role_changes_mutable_tables_but_cannot_rewrite_the_trail(app, db, demo_users, engine_name):
    if engine_name != "postgresql":
        result = app.test_cli_runner().invoke(args=["db-privileges", "grant", "labsys_app"])
        assert result.exit_code != 0 and "PostgreSQL only" in result.output
        return
    role = f"labsys_app_{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
    try:
        result = app.test_cli_runner().invoke(args=["db-privileges", "grant", role])
        assert result.exit_code == 0, result.output
        url = db.engine.url.set(username=role)
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]
        app_engine = create_engine(url, connect_args=options)
        try:
            with app_engine.begin() as connection:
                connection.execute(text("UPDATE users SET locale = 'en'"))  # mutable table: allowed
                assert connection.execute(text("SELECT count(*) FROM audit_entries")).scalar() > 0
            for table in sorted(guarded_tables() & {"audit_entries", "signatures"}):
                for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}", f"TRUNCATE {table}"):
                    with pytest.raises(DBAPIError, match="permission denied"):
                        with app_engine.begin() as connection:
                            connection.execute(text(statement))
        finally:
            app_engine.dispose()
    finally:
        with db.engine.begin() as connection:
            schema = connection.execute(text("SELECT current_schema()")).scalar()
            connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}'))
            connection.execute(text(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM {role}'))
            connection.execute(text(f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}'))
            connection.execute(text(f"DROP ROLE {role}"))
