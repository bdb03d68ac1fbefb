"""``flask --app wsgi users create`` and ``flask --app wsgi demo-data``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from labsys.audit.services import Actor
from labsys.auth import services as auth_services
from labsys.auth.roles import Role
from labsys.errors import RuleViolation
from labsys.navigation import demo_loaders

users_cli = AppGroup("users", help="User administration.")

DEFAULT_DEMO_PASSWORD = "labsys-demo-2026"

DEMO_USERS = [
    ("technician", "Li Na", [Role.TECHNICIAN]),
    ("technician2", "Zhou Jie", [Role.TECHNICIAN]),
    ("qa", "Wang Fang", [Role.QA]),
    ("qa2", "Chen Hui", [Role.QA]),
    ("pharmacist", "Zhang Wei", [Role.PHARMACIST]),
    ("pharmacist2", "Liu Yang", [Role.PHARMACIST]),
    ("investigator", "Dr. Huang Min", [Role.INVESTIGATOR]),
    ("admin", "Sun Lei", [Role.ADMIN]),
]


@users_cli.command("create")
@click.option("--username", required=True, help="The user ID (never reused).")
@click.option("--full-name", default=None, help="Printed name on signatures (defaults to the user ID).")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice([r.value for r in Role]), help="Repeat for several roles.")
def create_user_command(username: str, full_name: str | None, roles: tuple[str, ...]) -> None:
    """Create a user and print a one-time password to be changed at first sign-in."""
    try:
        user, password = auth_services.create_user(Actor.system("cli"), username, full_name or username, roles)
    except RuleViolation as refused:
        raise click.ClickException("; ".join([refused.message, *refused.reasons]))
    click.echo(f"Created {user.username} ({', '.join(sorted(r.value for r in user.role_set))}).")
    click.echo(f"One-time password: {password}")
    click.echo("The user must choose a new password at first sign-in.")


def demo_password() -> str:
    return current_app.config.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD


def ensure_demo_users() -> None:
    """Create the demo users once; a second run changes nothing."""
    for username, full_name, roles in DEMO_USERS:
        if auth_services.find_user(username) is None:
            auth_services.create_user(Actor.system("demo-data"), username, full_name, roles,
                                      password=demo_password(), must_change_password=False)


@click.command("demo-data")
def demo_data_command() -> None:
    """Load the demo users and data set (idempotent)."""
    ensure_demo_users()
    for loader in demo_loaders(current_app):
        loader()
    click.echo("Demo data loaded. Sign in at http://127.0.0.1:5000 with:")
    for username, _, roles in DEMO_USERS:
        click.echo(f"  {username:<13} {', '.join(r.value for r in roles):<14} password: {demo_password()}")
