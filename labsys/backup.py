"""``flask --app wsgi backup --out FILE`` and ``flask --app wsgi restore FILE``.

SQLite: an online backup (sqlite3's backup API copies a consistent snapshot while the app keeps
writing) and a restore that checks the file before it takes its place. PostgreSQL: use the
server's own tools, ``pg_dump --format=custom`` and ``pg_restore`` (see README.md).

A database alone is not enough to carry on: the trial's allocation list is sealed with a key kept
outside the database, and vial labels are signed with the installation's Ed25519 key. So the
backup also copies those key files into ``FILE.keys/`` (owner-only), restore puts them back, and
restore proves the allocation seal opens with the key installed (a restored database whose
allocation list cannot be opened would silently end randomization)."""
from __future__ import annotations

import datetime as dt
import os
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


KEYS_SUFFIX = ".keys"


def _key_place(instance_path: str | Path, name: str) -> Path | None:
    """Where a key file named ``name`` inside a backup lives in this installation (None for a
    name that is not a key file)."""
    from labsys.documents.codec import key_file_path
    from labsys.trial.sealing import KEY_FILE

    signing = key_file_path(instance_path)
    if name.startswith("public_keys/"):
        return signing.parent / name
    return {"signing_key.pem": signing, KEY_FILE: Path(instance_path) / KEY_FILE}.get(name)


def key_files(instance_path: str | Path) -> dict[str, Path]:
    """The installation's key files that exist on disk, by their name inside a backup."""
    from labsys.trial.sealing import KEY_FILE

    names = ["signing_key.pem", KEY_FILE]
    public_dir = _key_place(instance_path, "public_keys/x").parent
    names += [f"public_keys/{p.name}" for p in sorted(public_dir.glob("*.pem"))]
    places = {name: _key_place(instance_path, name) for name in names}
    return {name: path for name, path in places.items() if path.is_file()}


def keys_dir_for(backup_file: Path) -> Path:
    return backup_file.with_name(backup_file.name + KEYS_SUFFIX)


def backup_keys(instance_path: str | Path, target_dir: Path) -> list[str]:
    """Copy the key files into ``target_dir`` (mode 0700, files 0600); returns the names copied."""
    target_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(target_dir, 0o700)
    copied = []
    for name, path in key_files(instance_path).items():
        destination = target_dir / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(destination.parent, 0o700)
        shutil.copyfile(path, destination)
        os.chmod(destination, 0o600)
        copied.append(name)
    return copied


def restore_keys(source_dir: Path, instance_path: str | Path, force: bool) -> list[str]:
    """Install the backed-up key files. A different key already in place is replaced only with
    ``force`` (and kept aside); checks every clash before copying anything."""
    plan = []
    for source in sorted(p for p in source_dir.rglob("*") if p.is_file()):
        name = source.relative_to(source_dir).as_posix()
        destination = _key_place(instance_path, name)
        if destination is None:
            continue
        if destination.exists() and destination.read_bytes() != source.read_bytes() and not force:
            raise click.ClickException(
                f"{destination} holds a different key than the backup; use --force to replace it "
                "(the current key is kept aside).")
        plan.append((name, source, destination))
    installed = []
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    for name, source, destination in plan:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            if destination.read_bytes() == source.read_bytes():
                continue
            shutil.move(destination, destination.with_name(f"{destination.name}.before-restore-{stamp}"))
        shutil.copyfile(source, destination)
        os.chmod(destination, 0o600)
        installed.append(name)
    if installed:
        from labsys.documents import codec

        codec._keyrings.clear()  # the next label check reads the restored key
    return installed


def check_allocation_seal() -> str | None:
    """None when the first sealed allocation line opens with the installed key (or there is no
    list); otherwise what is wrong."""
    from sqlalchemy import select

    from labsys.trial.models import AllocationEntry
    from labsys.trial.sealing import SealBroken, open_arm

    entry = db.session.scalars(select(AllocationEntry).order_by(AllocationEntry.id).limit(1)).first()
    if entry is None:
        return None
    try:
        open_arm(entry.trial_id, entry.sequence, entry.arm_sealed)
    except SealBroken as error:
        return f"the trial allocation list cannot be opened: {error}"
    return None


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
@click.option("--keys-only", is_flag=True, help="Copy only the key files (with pg_dump on PostgreSQL).")
def backup_command(out: Path, keys_only: bool) -> None:
    """Back up the database while the app keeps running (SQLite online backup), and the key
    files (label signing key, trial allocation key) into OUT.keys/."""
    from flask import current_app

    if not keys_only:
        source = _sqlite_path()
        pages = backup_sqlite(source, out)
        click.echo(f"Backed up {source} to {out} ({pages} pages, {out.stat().st_size} bytes).")
    keys_dir = keys_dir_for(out)
    copied = backup_keys(current_app.instance_path, keys_dir)
    click.echo(f"Key files copied to {keys_dir}: {', '.join(copied) or 'none on disk'}. "
               "Keep them as safe as the database: without the allocation key the trial list cannot be opened.")
    if os.environ.get("LABSYS_TRIAL_ALLOCATION_KEY") or os.environ.get("LABSYS_SIGNING_KEY_FILE"):
        click.echo("Keys given by LABSYS_TRIAL_ALLOCATION_KEY / LABSYS_SIGNING_KEY_FILE live in your secret store: back them up there.")


@click.command("restore")
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already holds data (the old file is kept aside).")
def restore_command(backup_file: Path, force: bool) -> None:
    """Restore a backup (and its key files from BACKUP_FILE.keys/) into the configured database
    (stop the app first), then verify the audit chain and that the allocation seal opens."""
    from flask import current_app

    target = _sqlite_path()
    problems = check_sqlite_file(backup_file)
    if problems:
        raise click.ClickException(f"{backup_file} cannot be restored: " + "; ".join(problems))
    keys_dir = keys_dir_for(backup_file)
    if keys_dir.is_dir():
        installed = restore_keys(keys_dir, current_app.instance_path, force)
        click.echo(f"Key files restored from {keys_dir}: {', '.join(installed) or 'already in place'}.")
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
    seal_problem = check_allocation_seal()
    if seal_problem:
        click.echo(f"Restored, but {seal_problem}. Install the allocation key from the backup ({keys_dir}).")
        sys.exit(1)
    click.echo(f"Restored {backup_file} into {target}; audit chain OK ({result.entries} entries); "
               "allocation seal opens.")


def init_app(app) -> None:
    app.cli.add_command(backup_command)
    app.cli.add_command(restore_command)
