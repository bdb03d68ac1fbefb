"""``flask --app wsgi backup --out FILE`` and ``flask --app wsgi restore FILE``.

SQLite: an online backup (sqlite3's backup API copies a consistent snapshot while the app keeps
writing) and a restore that checks the file before it takes its place. PostgreSQL: use the
server's own tools, ``pg_dump --format=custom`` and ``pg_restore`` (see README.md)."""
from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import sys
from pathlib import Path

import click

from labsys.extensions import db

POSTGRES_HELP = ("On PostgreSQL use the server's tools: "
                 "pg_dump --format=custom --file=labsys.dump \"$LABSYS_DATABASE_URL\" to back up, "
                 "pg_restore --dbname=\"$LABSYS_DATABASE_URL\" --single-transaction labsys.dump "
                 "into an empty database to restore, then `flask --app wsgi audit verify`.")


def _sqlite_path() -> Path:
    url = db.engine.url
    if url.get_backend_name() != "sqlite":
        raise click.ClickException(POSTGRES_HELP)
    if not url.database or url.database == ":memory:":
        raise click.ClickException("An in-memory database cannot be backed up.")
    return Path(url.database)


def backup_sqlite(source: Path, target: Path) -> int:
    """Copy a consistent snapshot of a live SQLite database; returns the pages copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30) as src, sqlite3.connect(partial) as dst:
        src.backup(dst, pages=1024)
        pages = dst.execute("PRAGMA page_count").fetchone()[0]
    partial.replace(target)
    return pages


def check_sqlite_file(path: Path) -> list[str]:
    """Problems that make a file unfit to restore (empty list when it is fit)."""
    problems = []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            if connection.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                problems.append("the SQLite integrity check failed")
            tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "audit_entries" not in tables:
                problems.append("it is not a labsys database (no audit trail)")
    except sqlite3.DatabaseError as error:
        problems.append(f"it is not an SQLite database ({error})")
    return problems


@click.command("backup")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the backup file.")
def backup_command(out: Path) -> None:
    """Back up the database while the app keeps running (SQLite online backup)."""
    source = _sqlite_path()
    pages = backup_sqlite(source, out)
    click.echo(f"Backed up {source} to {out} ({pages} pages, {out.stat().st_size} bytes).")


@click.command("restore")
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data (the old file is kept aside).")
def restore_command(backup_file: Path, force: bool) -> None:
    """Restore a backup into the configured database (stop the app first), then verify it."""
    target = _sqlite_path()
    problems = check_sqlite_file(backup_file)
    if problems:
        raise click.ClickException(f"{backup_file} cannot be restored: " + "; ".join(problems))
    db.session.remove()
    db.engine.dispose()
    if target.exists() and target.stat().st_size > 0 and check_sqlite_file(target) == []:
        if not force:
            raise click.ClickException(f"{target} already holds a labsys database; use --force to replace it.")
        aside = target.with_name(f"{target.name}.before-restore-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
        shutil.move(target, aside)
        click.echo(f"The old database is kept at {aside}.")
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    backup_sqlite(backup_file, target)
    from labsys.audit.services import verify_chain

    result = verify_chain(db.session)
    if not result.ok:
        click.echo(f"Restored, but the audit chain is BROKEN at entry {result.broken_seq}: {result.problem}")
        sys.exit(1)
    click.echo(f"Restored {backup_file} into {target}; audit chain OK ({result.entries} entries).")


def init_app(app) -> None:
    app.cli.add_command(backup_command)
    app.cli.add_command(restore_command)
