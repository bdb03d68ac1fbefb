"""``flask --app wsgi audit verify``: replay the hash chain."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from labsys.audit.services import verify_chain
from labsys.extensions import db

audit_cli = AppGroup("audit", help="Audit trail commands.")


@audit_cli.command("verify")
@click.option("--at", "at_hash", default=None, help="Also prove that this chain-head hash is in the chain.")
def verify_command(at_hash: str | None) -> None:
    """Replay the chain; print OK <n> entries and exit 0, or name the first broken entry and exit 1."""
    result = verify_chain(db.session, at_hash)
    if not result.ok:
        click.echo(f"BROKEN at entry {result.broken_seq}: {result.problem} ({result.entries} entries read)")
        sys.exit(1)
    if at_hash is not None and not result.found_at:
        click.echo(f"OK {result.entries} entries, but {at_hash} is not in the chain")
        sys.exit(1)
    suffix = f"; {at_hash} is in the chain" if at_hash else ""
    click.echo(f"OK {result.entries} entries (head {result.head_hash}){suffix}")
