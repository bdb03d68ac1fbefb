"""Backup under write load and restore into a fresh database: nothing lost, chain intact."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from labsys.audit.models import AuditEntry
from labsys.audit.services import Actor, record_event, unit_of_work, verify_chain
from labsys.auth.models import User
from tests.conftest import make_app


def _counts(db):
    return (db.session.scalar(select(func.count()).select_from(User)),
            db.session.scalar(select(func.count()).select_from(AuditEntry)))


def test_a_backup_taken_under_write_load_restores_into_a_fresh_database(app, db, demo_users, tmp_path,
                                                                        sqlite_template, engine_name):
    if engine_name != "sqlite":
        result = app.test_cli_runner().invoke(args=["backup", "--out", str(tmp_path / "x.db")])
        assert result.exit_code != 0 and "pg_dump" in result.output
        return
    stop = threading.Event()
    written = []

    def writer():
        with app.app_context():
            while not stop.is_set():
                with unit_of_work(Actor.system("load"), "load.write"):
                    record_event(Actor.system("load"), "load.write", "test", len(written))
                written.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        backup_file = tmp_path / "backup" / "labsys-backup.db"
        result = app.test_cli_runner().invoke(args=["backup", "--out", str(backup_file)])
        assert result.exit_code == 0, result.output
    finally:
        stop.set()
        thread.join()
    # What the backup holds: a consistent snapshot whose chain verifies.
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    empty = restored_dir / "empty.db"
    empty.touch()
    fresh, cleanup = make_app("sqlite", restored_dir, empty)
    try:
        with fresh.app_context():
            result = fresh.test_cli_runner().invoke(args=["restore", str(backup_file)])
            assert result.exit_code == 0, result.output
            assert "audit chain OK" in result.output
            users, entries = _counts(db)
            assert users == 8 and entries >= 16 + 20
            assert verify_chain(db.session).ok
            # A second restore over a database with data needs --force.
            again = fresh.test_cli_runner().invoke(args=["restore", str(backup_file)])
            assert again.exit_code != 0 and "--force" in again.output
    finally:
        cleanup()


def test_restore_refuses_a_file_that_is_not_a_labsys_database(app, tmp_path, engine_name):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    result = app.test_cli_runner().invoke(args=["restore", str(bogus)])
    assert result.exit_code != 0
    assert "cannot be restored" in result.output or "pg_dump" in result.output
