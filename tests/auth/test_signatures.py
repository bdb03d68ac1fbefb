"""Electronic signatures: re-authentication, binding to the record version, append-only."""
from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from labsys.audit.models import AuditEntry
from labsys.audit.services import record_hash, unit_of_work
from labsys.auth.models import Signature, SignatureMeaning, User
from labsys.auth.services import actor_of
from labsys.auth.signatures import authenticate_signer, sign, signature_holds, signatures_for
from labsys.errors import SignatureRefused
from tests.conftest import DEMO_PASSWORD


def _sign_user_record(db, signer: User, record: User, meaning=SignatureMeaning.REVIEWED) -> Signature:
    check = authenticate_signer(signer, signer.username, DEMO_PASSWORD, meaning, "looks right")
    with unit_of_work(actor_of(signer), "user.review"):
        signature = sign(check, record)
    return signature


def test_a_signature_records_name_time_meaning_and_the_record_hash(db, demo_users):
    qa, tech = demo_users["qa"], demo_users["technician"]
    signature = _sign_user_record(db, qa, tech)
    db.session.rollback()
    stored = db.session.get(Signature, signature.id)
    assert stored.printed_name == "Wang Fang"
    assert stored.meaning is SignatureMeaning.REVIEWED
    assert stored.signed_at.tzinfo is not None
    assert stored.record_hash == record_hash(db.session.get(User, tech.id))
    assert stored.comment == "looks right"
    assert signatures_for(db.session.get(User, tech.id)) == [stored]
    assert db.session.scalars(select(AuditEntry).where(AuditEntry.entity_type == "signatures")).one()


def test_a_signature_no_longer_holds_once_the_record_changes(db, demo_users):
    qa, tech = demo_users["qa"], demo_users["technician"]
    signature = _sign_user_record(db, qa, tech)
    with unit_of_work(actor_of(qa), "user.rename"):
        tech.full_name = "Li Na-Wang"
    assert not signature_holds(signature, tech)


def test_a_wrong_password_is_refused_and_counts_toward_lockout(db, demo_users):
    qa = demo_users["qa"]
    with pytest.raises(SignatureRefused) as refused:
        authenticate_signer(qa, "qa", "wrong-password", SignatureMeaning.RELEASED)
    assert refused.value.status_code == 403
    db.session.rollback()
    assert db.session.get(User, qa.id).failed_logins == 1
    assert db.session.scalar(select(Signature.id)) is None
    assert db.session.scalars(select(AuditEntry).where(AuditEntry.action == "signature.failed")).one()


def test_nobody_signs_with_another_persons_user_id(db, demo_users):
    with pytest.raises(SignatureRefused):
        authenticate_signer(demo_users["qa"], "qa2", DEMO_PASSWORD, SignatureMeaning.RELEASED)


def test_an_administrator_cannot_sign(db, demo_users):
    with pytest.raises(SignatureRefused):
        authenticate_signer(demo_users["admin"], "admin", DEMO_PASSWORD, SignatureMeaning.APPROVED)


def test_repeated_signature_failures_lock_the_account(app, db, demo_users):
    qa = demo_users["qa"]
    for _ in range(app.config["LOCKOUT_THRESHOLD"]):
        with pytest.raises(SignatureRefused):
            authenticate_signer(qa, "qa", "wrong-password", SignatureMeaning.RELEASED)
    db.session.rollback()
    assert db.session.get(User, qa.id).locked_at is not None
    with pytest.raises(SignatureRefused):
        authenticate_signer(db.session.get(User, qa.id), "qa", DEMO_PASSWORD, SignatureMeaning.RELEASED)


@pytest.mark.parametrize("statement", [
    "UPDATE signatures SET printed_name = 'Someone Else'",
    "DELETE FROM signatures",
])
def test_the_database_refuses_to_change_or_delete_a_signature(db, demo_users, statement):
    _sign_user_record(db, demo_users["qa"], demo_users["technician"])
    with pytest.raises(DBAPIError, match="append-only"):
        with db.engine.begin() as connection:
            connection.execute(text(statement))
    db.session.rollback()
    assert db.session.scalar(select(Signature.printed_name)) == "Wang Fang"
