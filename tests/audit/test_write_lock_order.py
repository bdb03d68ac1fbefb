"""Writers take the audit-chain lock before any row lock, so two transactions that update the
same rows in different order queue instead of deadlocking (PostgreSQL reported "deadlock
detected" in the race soak, tests/reliability/test_race_soak.py: one writer held the chain lock
and waited for a row another writer had updated before it asked for the chain)."""
from __future__ import annotations

import threading
import time

from labsys.audit.services import Actor, unit_of_work, verify_chain
from labsys.auth.models import User
from labsys.extensions import db as _db


def test_two_writers_crossing_the_same_rows_queue_instead_of_deadlocking(app, db, demo_users):
    first_id, second_id = demo_users["technician"].id, demo_users["technician2"].id
    first_flushed = threading.Event()
    errors: list[str] = []

    def writer_one():
        with app.app_context():
            try:
                with unit_of_work(Actor.system("one"), "test.one"):
                    _db.session.get(User, first_id).full_name = "One A"
                    _db.session.flush()  # holds row A and (as every writer) the audit chain
                    first_flushed.set()
                    time.sleep(0.5)  # the other writer now updates row B, or waits to begin
                    _db.session.get(User, second_id).full_name = "One B"
                    _db.session.flush()
            except Exception as error:  # noqa: BLE001 - the test reports what leaked
                errors.append(f"one: {type(error).__name__}: {error}")
            finally:
                first_flushed.set()
                _db.session.remove()

    def writer_two():
        first_flushed.wait(timeout=10)
        with app.app_context():
            try:
                with unit_of_work(Actor.system("two"), "test.two"):
                    _db.session.get(User, second_id).full_name = "Two B"
                    _db.session.flush()
            except Exception as error:  # noqa: BLE001
                errors.append(f"two: {type(error).__name__}: {error}")
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=writer_one), threading.Thread(target=writer_two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.rollback()
    assert errors == []
    assert db.session.get(User, first_id).full_name == "One A"
    assert db.session.get(User, second_id).full_name == "Two B"  # the second writer went after the first
    assert verify_chain(db.session).ok
