"""The audit trail: one entry per change in the same transaction, hash-chained, append-only,
serialized, and verified by replay."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from labsys.audit.models import AuditEntry
from labsys.audit.services import Actor, record_event, unit_of_work, verify_chain
from labsys.auth import services as auth
from labsys.auth.models import User
from labsys.errors import RuleViolation


def _entries(db):
    return db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()


def test_a_change_writes_old_and_new_values_who_when_and_why(db, demo_users):
    admin = auth.actor_of(demo_users["admin"])
    auth.deactivate_user(admin, demo_users["technician"], "left the lab")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user.deactivate")).one()
    assert entry.user_id == demo_users["admin"].id
    assert entry.actor_name == "Sun Lei (admin)"
    assert entry.entity_type == "users" and entry.entity_id == str(demo_users["technician"].id)
    assert entry.old_values == '{"active":true}' and entry.new_values == '{"active":false}'
    assert entry.reason == "left the lab"
    assert entry.recorded_at.tzinfo is not None


def test_a_correction_without_a_reason_is_refused_and_writes_nothing(db, demo_users):
    before = len(_entries(db))
    with pytest.raises(RuleViolation):
        auth.deactivate_user(auth.actor_of(demo_users["admin"]), demo_users["technician"], "  ")
    db.session.rollback()
    assert len(_entries(db)) == before
    assert db.session.get(User, demo_users["technician"].id).active is True


def test_a_failed_unit_of_work_leaves_neither_record_nor_audit_entry(db, demo_users):
    before = len(_entries(db))
    with pytest.raises(ZeroDivisionError):
        with unit_of_work(Actor.system("test"), "user.rename"):
            demo_users["qa"].full_name = "Changed"
            record_event(Actor.system("test"), "something", "users", 1)
            db.session.flush()
            1 / 0
    db.session.rollback()
    assert len(_entries(db)) == before
    assert db.session.get(User, demo_users["qa"].id).full_name == "Wang Fang"
    # The queued event died with the transaction; the next unit of work does not write it.
    with unit_of_work(Actor.system("test"), "noop"):
        pass
    assert len(_entries(db)) == before


def test_changing_a_regulated_record_outside_a_unit_of_work_is_refused(db, demo_users):
    demo_users["qa"].full_name = "Sneaky"
    with pytest.raises(RuntimeError, match="unit_of_work"):
        db.session.commit()
    db.session.rollback()


def test_the_chain_verifies_and_links_every_entry(db, demo_users):
    entries = _entries(db)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(entries, entries[1:]))
    result = verify_chain(db.session)
    assert result.ok and result.entries == len(entries) and result.head_hash == entries[-1].hash


def test_verify_finds_the_entry_at_a_given_head_hash(db, demo_users):
    head = _entries(db)[3].hash
    assert verify_chain(db.session, at_hash=head).found_at is True
    assert verify_chain(db.session, at_hash="f" * 64).found_at is False


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entries SET reason = 'edited' WHERE seq = 2",
    "DELETE FROM audit_entries WHERE seq = 2",
])
def test_the_database_refuses_to_change_the_trail(db, demo_users, statement):
    with pytest.raises(DBAPIError, match="append-only"):
        with db.engine.begin() as connection:
            connection.execute(text(statement))


def test_emptying_the_trail_at_once_is_refused(db, demo_users, engine_name):
    # PostgreSQL has TRUNCATE (a statement trigger refuses it); SQLite's equivalent is an
    # unqualified DELETE, whose truncate optimisation is off while a DELETE trigger exists.
    statement = "TRUNCATE audit_entries" if engine_name == "postgresql" else "DELETE FROM audit_entries"
    with pytest.raises(DBAPIError, match="append-only"):
        with db.engine.begin() as connection:
            connection.execute(text(statement))
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)) > 0


def _behind_the_apps_back(db, engine_name, statements):
    """Tamper as someone with direct database access: drop the SQLite triggers, or bypass the
    PostgreSQL triggers as a superuser (session_replication_role)."""
    with db.engine.begin() as connection:
        if engine_name == "sqlite":
            connection.execute(text("DROP TRIGGER trg_audit_entries_no_update"))
            connection.execute(text("DROP TRIGGER trg_audit_entries_no_delete"))
        else:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            connection.execute(text(statement))


@pytest.mark.parametrize("tampering, broken_seq", [
    (["UPDATE audit_entries SET new_values = '{}' WHERE seq = 5"], 5),
    (["DELETE FROM audit_entries WHERE seq = 4"], 5),
    (["UPDATE audit_entries SET seq = 1000 WHERE seq = 3",
      "UPDATE audit_entries SET seq = 3 WHERE seq = 6",
      "UPDATE audit_entries SET seq = 6 WHERE seq = 1000"], 3),
], ids=["altered", "deleted", "reordered"])
def test_verify_names_the_first_broken_entry(db, demo_users, engine_name, tampering, broken_seq):
    db.session.rollback()
    assert verify_chain(db.session).ok
    db.session.rollback()
    _behind_the_apps_back(db, engine_name, tampering)
    result = verify_chain(db.session)
    assert not result.ok
    assert result.broken_seq == broken_seq


def test_the_verify_command_prints_ok_or_names_the_break(app, db, demo_users, engine_name):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "verify"])
    count = db.session.scalar(select(func.count()).select_from(AuditEntry))
    assert result.exit_code == 0 and result.output.startswith(f"OK {count} entries")
    db.session.rollback()
    _behind_the_apps_back(db, engine_name, ["UPDATE audit_entries SET actor_name = 'nobody' WHERE seq = 2"])
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and "entry 2" in result.output


def test_concurrent_writers_keep_one_unbroken_chain(app, db, demo_users):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with app.app_context():
                for i in range(10):
                    with unit_of_work(Actor.system(f"writer-{n}"), "load.test"):
                        record_event(Actor.system(f"writer-{n}"), "load.test", "test", f"{n}-{i}")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db.session.rollback()
    assert db.session.scalar(select(func.count()).where(AuditEntry.action == "load.test")) == 40
    assert verify_chain(db.session).ok


@pytest.mark.parametrize("tampering, broken_seq", [
    ([], None),
    (["UPDATE audit_entries SET reason = 'x' WHERE seq = 3"], 3),
    (["DELETE FROM audit_entries WHERE seq = 9"], 10),
    (["UPDATE audit_entries SET action = 'x' WHERE seq = 14"], 14),
], ids=["intact", "early", "boundary", "late"])
def test_parallel_verification_joins_ranges_and_finds_every_break(db, demo_users, engine_name,
                                                                  monkeypatch, tampering, broken_seq):
    from labsys.audit import services as audit_services

    monkeypatch.setattr(audit_services, "PARALLEL_THRESHOLD", 1)
    db.session.rollback()
    last = db.session.scalar(select(func.max(AuditEntry.seq)))
    assert last >= 16
    _behind_the_apps_back(db, engine_name, tampering)
    result = verify_chain(db.session, workers=2)
    if broken_seq is None:
        assert result.ok and result.entries == last
    else:
        assert not result.ok and result.broken_seq == broken_seq


def test_a_created_record_is_audited_with_its_id(db, demo_users):
    created = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user.create",
                                                          AuditEntry.entity_type == "users")).all()
    assert created and all(entry.entity_id is not None for entry in created)
    assert {entry.entity_id for entry in created} == {str(user.id) for user in demo_users.values()}
