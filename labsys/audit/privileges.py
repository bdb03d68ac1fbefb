"""PostgreSQL least privilege: the app connects as a role that may read and insert everywhere,
may update and delete only mutable tables, and may never UPDATE, DELETE or TRUNCATE the
append-only tables (audit trail, signatures, custody events). Migrations run as the owner.

    flask --app wsgi db-privileges grant labsys_app     # run as the owner, after `db upgrade`
"""
from __future__ import annotations

import re

import click
from flask.cli import AppGroup
from sqlalchemy import inspect, text

from labsys.audit.guards import guarded_tables
from labsys.extensions import db

privileges_cli = AppGroup("db-privileges", help="PostgreSQL roles for least privilege.")
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_statements(role: str, tables: list[str], append_only: set[str], schema: str = "public") -> list[str]:
    if not ROLE_NAME.match(role):
        raise ValueError(f"invalid role name {role!r}")
    statements = [
        f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}',
    ]
    for table in sorted(tables):
        qualified = f'"{schema}"."{table}"'
        statements.append(f"REVOKE ALL ON {qualified} FROM {role}")
        if table in append_only:
            statements.append(f"GRANT SELECT, INSERT ON {qualified} TO {role}")
        elif table == "alembic_version":
            statements.append(f"GRANT SELECT ON {qualified} TO {role}")
        else:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {role}")
    return statements


def grant_app_role(role: str) -> list[str]:
    """Apply the grants for ``role`` to every table now in the database (run after upgrades)."""
    if db.engine.dialect.name != "postgresql":
        raise click.ClickException("Role grants apply to PostgreSQL only.")
    with db.engine.begin() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar()
        tables = inspect(connection).get_table_names(schema=schema)
        statements = grant_statements(role, tables, guarded_tables(), schema)
        for statement in statements:
            connection.execute(text(statement))
    return statements


@privileges_cli.command("grant")
@click.argument("role")
def grant_command(role: str) -> None:
    """Grant ROLE what the app needs, and nothing that could rewrite the append-only tables."""
    statements = grant_app_role(role)
    click.echo(f"Granted {role} least privilege on {sum(1 for s in statements if s.startswith('REVOKE'))} tables; "
               f"append-only: {', '.join(sorted(guarded_tables()))}.")
