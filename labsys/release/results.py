"""QC result services: entry (one test, or the flow cytometry panel at once), second-person
verification, and corrections that keep the old value. Every input problem is reported per
field and nothing is written."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import select

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.batches.models import Batch
from labsys.batches.states import BatchStatus
from labsys.db import utcnow
from labsys.errors import Forbidden, InvalidTransition, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.release.models import QCResult, ResultAttachment, SpecificationVersion
from labsys.release.rules import FAIL_WORDS, PASS_WORDS, POTENCY_TEST_CODE, CriterionKind, to_decimal
from labsys.release.specs import applicable_version, refuse, require_role, work
from labsys.timefmt import lab_today

ENTRY_ROLES = (Role.TECHNICIAN, Role.QA)
OPEN_FOR_RESULTS = (BatchStatus.IN_PROCESS, BatchStatus.QUARANTINE, BatchStatus.RELEASED_PENDING)
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


@dataclass
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass
class ResultInput:
    test_code: str
    value: str | None
    unit: str | None
    performed_by: str
    performed_on: dt.date | None
    method: str | None = None
    instrument: str | None = None
    pending: bool = False
    attachment: Attachment | None = None


def current_results(batch: Batch) -> list[QCResult]:
    return list(db.session.scalars(select(QCResult).where(
        QCResult.batch_id == batch.id, QCResult.superseded_by_id.is_(None)).order_by(QCResult.id)))


def all_results(batch: Batch) -> list[QCResult]:
    return list(db.session.scalars(select(QCResult).where(QCResult.batch_id == batch.id).order_by(QCResult.id)))


def current_result(batch: Batch, test_code: str) -> QCResult | None:
    return db.session.scalar(select(QCResult).where(
        QCResult.batch_id == batch.id, QCResult.test_code == test_code, QCResult.superseded_by_id.is_(None)))


def results_awaiting_verification(batch: Batch | None = None) -> list[QCResult]:
    query = select(QCResult).where(QCResult.superseded_by_id.is_(None), QCResult.verified_by_id.is_(None),
                                   QCResult.pending.is_(False))
    if batch is not None:
        query = query.where(QCResult.batch_id == batch.id)
    return list(db.session.scalars(query.order_by(QCResult.entered_at)))


def _field(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def _problems(batch: Batch, version: SpecificationVersion | None, data: ResultInput,
              prefix: str = "", replacing: QCResult | None = None) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Check one result; returns (problems, the values to store)."""
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    code = (data.test_code or "").strip().upper()
    if version is None:
        return [(_field(prefix, "test_code"), _("No approved specification applies to this batch."))], values
    criterion = version.criterion(code)
    if criterion is None:
        return [(_field(prefix, "test_code"),
                 _("Test %(code)s is not in specification %(spec)s.", code=code or "—", spec=version.label))], values
    if code == POTENCY_TEST_CODE:
        return [(_field(prefix, "test_code"), _("BV2 potency comes from the approved potency run, not from manual entry."))], values
    if replacing is None and current_result(batch, code) is not None:
        problems.append((_field(prefix, "test_code"),
                         _("A result for %(code)s exists: correct it instead.", code=code)))
    if replacing is not None and replacing.test_code != code:
        problems.append((_field(prefix, "test_code"), _("A correction keeps the test of the result it corrects.")))
    if not (data.performed_by or "").strip():
        problems.append((_field(prefix, "performed_by"), _("Name who performed the test.")))
    if data.performed_on is None:
        problems.append((_field(prefix, "performed_on"), _("Enter the date the test was performed.")))
    elif data.performed_on > lab_today() + dt.timedelta(days=1):
        problems.append((_field(prefix, "performed_on"), _("The test date is in the future.")))
    values.update(test_code=code, criterion=criterion, pending=False, numeric_value=None, text_value=None,
                  unit=criterion.unit)
    raw = (data.value or "").strip()
    if data.pending:
        if not criterion.may_be_pending:
            problems.append((_field(prefix, "value"), _("%(name)s may not be pending: enter its result.",
                                                       name=criterion.name)))
        values["pending"] = True
        values["unit"] = None
    elif not raw:
        problems.append((_field(prefix, "value"), _("Enter the result.")))
    elif criterion.kind == CriterionKind.NUMERIC:
        number = to_decimal(raw)
        unit = (data.unit or "").strip() or None
        if number is None:
            problems.append((_field(prefix, "value"), _("“%(value)s” is not a number.", value=raw)))
        elif abs(number) >= Decimal("1e10"):
            problems.append((_field(prefix, "value"), _("The number is too large.")))
        if unit != (criterion.unit or None):
            problems.append((_field(prefix, "unit"), _("The unit must be %(unit)s for %(name)s.",
                                                      unit=criterion.unit or "—", name=criterion.name)))
        values["numeric_value"] = number
    else:
        if criterion.kind == CriterionKind.PASS_FAIL and " ".join(raw.lower().split()) not in PASS_WORDS | FAIL_WORDS:
            problems.append((_field(prefix, "value"), _("Enter “conforms” or “does not conform”.")))
        if len(raw) > 120:
            problems.append((_field(prefix, "value"), _("The result is longer than 120 characters.")))
        values["text_value"] = raw
        values["unit"] = None
    if data.attachment is not None:
        if len(data.attachment.content) > current_app.config.get("RELEASE_MAX_ATTACHMENT_BYTES", MAX_ATTACHMENT_BYTES):
            problems.append((_field(prefix, "raw_data"), _("The raw data file is too large.")))
        elif not data.attachment.content:
            problems.append((_field(prefix, "raw_data"), _("The raw data file is empty.")))
    return problems, values


def _require_open(batch: Batch) -> None:
    if BatchStatus(batch.status) not in OPEN_FOR_RESULTS:
        raise InvalidTransition(_("Lot %(id)s is %(status)s: no results can be entered.",
                                  id=batch.identifier, status=BatchStatus(batch.status).value))


def _new_result(user: User, batch: Batch, version: SpecificationVersion, data: ResultInput,
                values: dict[str, Any], panel_key: str | None = None) -> QCResult:
    criterion = values["criterion"]
    result = QCResult(batch_id=batch.id, specification_version_id=version.id, test_code=values["test_code"],
                      numeric_value=values["numeric_value"], text_value=values["text_value"], unit=values["unit"],
                      pending=values["pending"], method=(data.method or "").strip() or criterion.method,
                      instrument=(data.instrument or "").strip() or None, performed_by=data.performed_by.strip(),
                      performed_on=data.performed_on, entered_at=utcnow(), entered_by_id=user.id,
                      panel_key=panel_key)
    db.session.add(result)
    if data.attachment is not None:
        content = data.attachment.content
        db.session.add(ResultAttachment(result=result, filename=data.attachment.filename[:200],
                                        content_type=data.attachment.content_type[:100] or "application/octet-stream",
                                        size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                                        content=content, uploaded_at=utcnow()))
    return result


def _recheck_under_lock(batch: Batch, test_codes: list[str]) -> None:
    """Inside the unit of work, check again what was checked before it: another entry or a QA
    decision may have committed in between. The unit of work holds the writer lock (BEGIN
    IMMEDIATE on SQLite, the audit-chain lock taken first on PostgreSQL) and began with every
    object expired, so what is read here is current and stays so until the commit."""
    _require_open(batch)
    taken = [code for code in test_codes if current_result(batch, code) is not None]
    if taken:
        raise refuse(_("Nothing was saved."), [("test_code", _("A result for %(code)s exists: correct it instead.",
                                                                code=code)) for code in taken])


def enter_result(user: User, batch: Batch, data: ResultInput) -> QCResult:
    """Record one result of one test of the batch's specification version."""
    require_role(user, *ENTRY_ROLES)
    _require_open(batch)
    version = applicable_version(batch)
    problems, values = _problems(batch, version, data)
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    with work(user, "qc_result.enter"):
        _recheck_under_lock(batch, [values["test_code"]])
        result = _new_result(user, batch, version, data, values)  # type: ignore[arg-type]
    return result


def enter_panel(user: User, batch: Batch, entries: list[ResultInput]) -> list[QCResult]:
    """The flow cytometry panel as one entry: all markers are written, or none."""
    require_role(user, *ENTRY_ROLES)
    _require_open(batch)
    version = applicable_version(batch)
    problems: list[tuple[str, str]] = []
    checked = []
    for entry in entries:
        entry_problems, values = _problems(batch, version, entry, prefix=f"{entry.test_code.lower()}-")
        problems += entry_problems
        checked.append((entry, values))
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    panel_key = f"FCM-{batch.identifier}-{utcnow():%Y%m%d%H%M%S}"
    with work(user, "qc_result.enter_panel"):
        _recheck_under_lock(batch, [values["test_code"] for _entry, values in checked])
        results = [_new_result(user, batch, version, entry, values, panel_key)  # type: ignore[arg-type]
                   for entry, values in checked]
    return results


def verify_result(user: User, result: QCResult) -> QCResult:
    """Second-person verification of a manually entered value (EU GMP Annex 11 §6). A late result
    for a lot released with results pending takes effect here (see decisions.apply_late_result)."""
    from labsys.release.decisions import apply_late_result

    require_role(user, *ENTRY_ROLES)
    problems = []
    if result.entered_by_id == user.id:
        problems.append(("result", _("You entered this result: a different person must verify it.")))
    if result.is_verified:
        problems.append(("result", _("This result is already verified.")))
    if not result.is_current:
        problems.append(("result", _("This result was corrected; verify the correction instead.")))
    if result.pending:
        problems.append(("result", _("A pending result has no value to verify.")))
    if problems:
        raise RuleViolation(_("The result was not verified."), [text for _f, text in problems])
    with work(user, "qc_result.verify"):
        if result.is_verified:  # re-read under the write lock
            raise RuleViolation(_("This result is already verified."))
        result.verified_by_id = user.id
        result.verified_at = utcnow()
        batch = db.session.get(Batch, result.batch_id)
        apply_late_result(user, batch, result)
    return result


def correct_result(user: User, result: QCResult, data: ResultInput, reason: str | None) -> QCResult:
    """Replace a result by a new one; the old one stays, marked superseded, with the reason."""
    require_role(user, *ENTRY_ROLES)
    if not result.is_current:
        raise InvalidTransition(_("This result was already corrected."))
    batch = db.session.get(Batch, result.batch_id)
    _require_open(batch)
    version = db.session.get(SpecificationVersion, result.specification_version_id)
    data.test_code = data.test_code or result.test_code
    problems, values = _problems(batch, version, data, replacing=result)
    if not (reason or "").strip():
        problems.append(("reason", _("A reason is required for a correction.")))
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    with work(user, "qc_result.correct", reason, reason_required=True):
        if not result.is_current:
            raise InvalidTransition(_("This result was already corrected."))
        new = _new_result(user, batch, version, data, values, result.panel_key)  # type: ignore[arg-type]
        new.supersedes_id = result.id
        new.correction_reason = reason.strip()  # type: ignore[union-attr]
        db.session.flush()
        result.superseded_by_id = new.id
    return new


def results_entered_or_verified_by(user: User, batch: Batch) -> list[QCResult]:
    return [r for r in all_results(batch) if user.id in (r.entered_by_id, r.verified_by_id)]


def require_not_involved(user: User, batch: Batch) -> None:
    involved = results_entered_or_verified_by(user, batch)
    if involved:
        raise Forbidden(_("You entered or verified results of this lot; another QA person must decide."),
                        [f"{r.test_code}: {r.display_value}" for r in involved])
