"""Two QA users deciding the same lot at the same moment: exactly one decision is recorded
(conditional update on the batch's status and version), on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from labsys.auth.models import Signature, SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.batches.models import Batch
from labsys.batches.states import BatchStatus
from labsys.errors import ConcurrentChange, InvalidTransition
from labsys.extensions import db as _db
from labsys.release import decisions
from labsys.release.models import ReleaseDecision

from .conftest import enter_results, passing_potency


def test_two_qa_users_releasing_at_once_record_exactly_one_decision(app, db, lots, users, potency_runs, monkeypatch):
    batch = lots.lot(vial_count=3)
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    batch_id, version = batch.id, batch.version
    original = decisions.require_not_involved

    def slow_check(user, lot):
        # Both transactions have read the lot in quarantine before either writes.
        original(user, lot)
        time.sleep(0.3)

    monkeypatch.setattr(decisions, "require_not_involved", slow_check)
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def decide(username: str, release: bool):
        with app.app_context():
            try:
                user = _db.session.get(type(users[username]), users[username].id)
                lot = _db.session.get(Batch, batch_id)
                meaning = SignatureMeaning.RELEASED if release else SignatureMeaning.REJECTED
                start.wait(timeout=10)
                decision = decisions.decide_lot(user, lot, release, SignatureCheck(user, meaning, "race"),
                                                "race", version)
                outcomes[username] = decision.decision.value
            except (ConcurrentChange, InvalidTransition) as error:
                outcomes[username] = type(error).__name__
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=decide, args=("qa", True)),
               threading.Thread(target=decide, args=("qa2", False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.rollback()
    winners = [name for name, value in outcomes.items() if value in ("released", "rejected")]
    losers = [name for name, value in outcomes.items() if value in ("ConcurrentChange", "InvalidTransition")]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert db.session.scalar(select(func.count(ReleaseDecision.id))) == 1
    assert db.session.scalar(select(func.count(Signature.id)).where(Signature.entity_type == "release_decisions")) == 1
    status = db.session.get(Batch, batch_id).status
    assert status == (BatchStatus.RELEASED if outcomes[winners[0]] == "released" else BatchStatus.REJECTED)


def test_two_entries_of_one_test_at_once_record_exactly_one_current_result(app, db, lots, users, monkeypatch):
    """Found by the race soak (tests/reliability/test_race_soak.py): both entries passed the
    "a result exists" check before either wrote, and the lot got two current KARYOTYPE results."""
    from labsys.errors import RuleViolation
    from labsys.release import results
    from labsys.release.models import QCResult

    from .conftest import enter_results, result_input

    batch = lots.lot(vial_count=2)
    enter_results(users, batch, skip=("KARYOTYPE",))
    batch_id = batch.id
    both_checked = threading.Barrier(2)
    original = results._problems

    def checked_then_wait(*args, **kwargs):
        found = original(*args, **kwargs)
        both_checked.wait(timeout=10)  # both entries have passed the check before either writes
        return found

    monkeypatch.setattr(results, "_problems", checked_then_wait)
    outcomes: list[str] = []

    def enter(username: str):
        with app.app_context():
            try:
                user = _db.session.get(type(users[username]), users[username].id)
                results.enter_result(user, _db.session.get(Batch, batch_id), result_input("KARYOTYPE", "normal"))
                outcomes.append("entered")
            except RuleViolation as error:
                outcomes.append(error.reasons[0])
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=enter, args=(name,)) for name in ("technician", "technician2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.rollback()
    assert sorted(outcomes) == sorted(["entered", "A result for KARYOTYPE exists: correct it instead."])
    assert db.session.scalar(select(func.count(QCResult.id)).where(
        QCResult.batch_id == batch_id, QCResult.test_code == "KARYOTYPE", QCResult.superseded_by_id.is_(None))) == 1
