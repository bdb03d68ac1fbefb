"""Electronic signatures (21 CFR 11.50, 11.70, 11.200; EU GMP Annex 11 §14).

A signature re-asks both components (user ID and password) of the person signing, records their
printed name, the UTC time and the meaning, and binds the SHA-256 of the exact record version
signed. Call ``sign`` inside the service's ``unit_of_work`` so the record change, the signature
and their audit entries commit together or not at all."""
from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select

from labsys.audit.services import entity_id_of, record_hash
from labsys.auth.models import Signature, SignatureMeaning, User
from labsys.auth.roles import Permission
from labsys.auth.services import password_matches, register_failure
from labsys.db import utcnow
from labsys.errors import SignatureRefused
from labsys.extensions import db
from labsys.i18n import gettext as _


class SignatureCheck:
    """The result of re-authentication, checked before any change is made."""

    def __init__(self, signer: User, meaning: SignatureMeaning, comment: str | None):
        self.signer = signer
        self.meaning = meaning
        self.comment = comment.strip() if comment and comment.strip() else None


def authenticate_signer(current_user: User, username: str, password: str,
                        meaning: SignatureMeaning | str, comment: str | None = None) -> SignatureCheck:
    """Re-authenticate the signed-in user. The user ID must be the signer's own: a signature can
    never be made with another person's credentials. A wrong password counts toward lockout.

    Call this before opening the unit of work: a refusal records the failed attempt."""
    meaning = SignatureMeaning(meaning)
    if not current_user.can(Permission.SIGN):
        raise SignatureRefused(_("Your role cannot sign records."))
    if username.strip().lower() != current_user.username:
        raise SignatureRefused(_("Sign with your own user ID."),
                               [_("The user ID entered is not the signed-in user's.")])
    if not current_user.may_act:
        raise SignatureRefused(_("This account cannot sign."))
    if not password_matches(current_user, password):
        locked = register_failure(current_user, "signature.failed")
        reasons = [_("Wrong password.")]
        if locked:
            reasons.append(_("The account is now locked after too many failed attempts."))
        raise SignatureRefused(_("The signature was refused."), reasons)
    return SignatureCheck(current_user, meaning, comment)


def authenticate_form_signer(form: Any, meaning: SignatureMeaning | str) -> SignatureCheck:
    """``authenticate_signer`` for the signed-in user with the fields of a form that mixes in
    ``SignatureFormMixin`` (sign_username, sign_password, sign_comment)."""
    from flask_login import current_user

    return authenticate_signer(current_user, form.sign_username.data, form.sign_password.data, meaning,
                               form.sign_comment.data)


def sign(check: SignatureCheck, record: Any) -> Signature:
    """Bind a signature to the record as it stands now (flushed, so it has its id)."""
    db.session.flush()
    signature = Signature(
        user_id=check.signer.id,
        printed_name=check.signer.full_name,
        meaning=check.meaning,
        signed_at=utcnow(),
        entity_type=inspect(record).mapper.persist_selectable.name,
        entity_id=entity_id_of(record),
        record_hash=record_hash(record),
        comment=check.comment,
    )
    db.session.add(signature)
    db.session.flush()
    return signature


def signatures_for(record: Any) -> list[Signature]:
    entity_id = entity_id_of(record)
    if entity_id is None:
        return []
    return list(db.session.scalars(
        select(Signature).where(
            Signature.entity_type == inspect(record).mapper.persist_selectable.name,
            Signature.entity_id == entity_id,
        ).order_by(Signature.signed_at, Signature.id)))


def signature_holds(signature: Signature, record: Any) -> bool:
    """True while the record still is the version that was signed."""
    return signature.record_hash == record_hash(record)
