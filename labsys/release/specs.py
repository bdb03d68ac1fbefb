"""Specification services: draft versions, criteria, QA approval that supersedes the previous
version, and the choice of the version a batch is judged against (the one approved at fill)."""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import unit_of_work
from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.db import utcnow
from labsys.errors import ConcurrentChange, Forbidden, InvalidTransition, NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.release.defaults import DEFAULT_SPECIFICATION_CODE
from labsys.release.models import SpecCriterion, Specification, SpecificationVersion, SpecStatus
from labsys.release.rules import Criterion, CriterionKind


@contextlib.contextmanager
def work(user: User, action: str, reason: str | None = None, reason_required: bool = False) -> Iterator[Any]:
    """``unit_of_work`` for a user; a lost race on a versioned row becomes ConcurrentChange."""
    try:
        with unit_of_work(actor_of(user), action, reason, reason_required=reason_required) as session:
            yield session
    except StaleDataError:
        raise ConcurrentChange(_("Someone else changed this record at the same time. Reload and try again."))


def require_role(user: User, *roles: Role) -> None:
    if not user.has_role(*roles):
        raise Forbidden(_("Your role does not allow this action."))


def refuse(message: str, problems: list[tuple[str, str]]) -> RuleViolation:
    """A RuleViolation with every (field, message) problem on ``error.problems``."""
    error = RuleViolation(message, [text for _field, text in problems], field=problems[0][0] if problems else None)
    error.problems = problems  # type: ignore[attr-defined]
    return error


def get_or_404(model: type, record_id: int) -> Any:
    record = db.session.get(model, record_id)
    if record is None:
        raise NotFound(_("There is no such record."))
    return record


def specification_code() -> str:
    return current_app.config.get("RELEASE_SPECIFICATION_CODE", DEFAULT_SPECIFICATION_CODE)


def find_specification(code: str | None = None) -> Specification | None:
    return db.session.scalar(select(Specification).where(Specification.code == (code or specification_code())))


def current_version(specification: Specification | None = None) -> SpecificationVersion | None:
    specification = specification or find_specification()
    if specification is None:
        return None
    return db.session.scalar(select(SpecificationVersion).where(
        SpecificationVersion.specification_id == specification.id,
        SpecificationVersion.status == SpecStatus.APPROVED))


def version_approved_at(moment: dt.datetime, specification: Specification | None = None) -> SpecificationVersion | None:
    """The version in force at ``moment``: approved at or before it and not yet superseded."""
    specification = specification or find_specification()
    if specification is None:
        return None
    return db.session.scalar(select(SpecificationVersion).where(
        SpecificationVersion.specification_id == specification.id,
        SpecificationVersion.approved_at.is_not(None),
        SpecificationVersion.approved_at <= moment,
        (SpecificationVersion.superseded_at.is_(None)) | (SpecificationVersion.superseded_at > moment),
    ).order_by(SpecificationVersion.approved_at.desc()).limit(1))


def applicable_version(batch: Any) -> SpecificationVersion | None:
    """The version a batch is judged against: the one approved when it was filled (before fill,
    the version approved now)."""
    fill = getattr(batch, "fill", None)
    if fill is not None:
        return version_approved_at(fill.filled_at)
    return current_version()


@dataclass
class CriterionInput:
    test_code: str
    name: str
    kind: str
    unit: str | None = None
    lower_limit: Decimal | None = None
    upper_limit: Decimal | None = None
    expected_text: str | None = None
    may_be_pending: bool = False
    method: str | None = None


def criterion_problems(data: CriterionInput) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not (data.test_code or "").strip():
        problems.append(("test_code", _("Enter the test code.")))
    if not (data.name or "").strip():
        problems.append(("name", _("Enter the test name.")))
    try:
        kind = CriterionKind(data.kind)
    except ValueError:
        problems.append(("kind", _("Choose the kind of criterion.")))
        return problems
    if kind == CriterionKind.NUMERIC:
        if data.lower_limit is None and data.upper_limit is None:
            problems.append(("lower_limit", _("A numeric criterion needs a lower or an upper limit.")))
        if data.lower_limit is not None and data.upper_limit is not None and data.lower_limit > data.upper_limit:
            problems.append(("upper_limit", _("The upper limit is below the lower limit.")))
    if kind == CriterionKind.TEXT and not (data.expected_text or "").strip():
        problems.append(("expected_text", _("Enter the text the result must equal.")))
    return problems


def _criterion_row(position: int, data: CriterionInput | Criterion) -> SpecCriterion:
    kind = CriterionKind(data.kind)
    return SpecCriterion(position=position, test_code=data.test_code.strip().upper(), name=data.name.strip(),
                         method=(data.method or "").strip() or None, kind=kind,
                         unit=(data.unit or "").strip() or None,
                         lower_limit=data.lower_limit if kind == CriterionKind.NUMERIC else None,
                         upper_limit=data.upper_limit if kind == CriterionKind.NUMERIC else None,
                         expected_text=(data.expected_text or "").strip() or None if kind == CriterionKind.TEXT else None,
                         may_be_pending=bool(data.may_be_pending))


def create_specification(user: User, code: str, title: str, criteria: list[Criterion] | tuple[Criterion, ...],
                         change_summary: str | None = None) -> SpecificationVersion:
    """A new specification with its first draft version."""
    require_role(user, Role.QA)
    with work(user, "specification.create"):
        specification = Specification(code=code, title=title)
        version = SpecificationVersion(specification=specification, version_number=1, status=SpecStatus.DRAFT,
                                       change_summary=change_summary, created_by_id=user.id, created_at=utcnow())
        db.session.add_all([specification, version])
        for position, criterion in enumerate(criteria, start=1):
            row = _criterion_row(position, criterion)
            row.spec_version = version
            db.session.add(row)
    return version


def new_draft(user: User, specification: Specification, change_summary: str) -> SpecificationVersion:
    """A new draft version, starting from a copy of the latest version's criteria."""
    require_role(user, Role.QA)
    if any(v.status == SpecStatus.DRAFT for v in specification.versions):
        raise RuleViolation(_("A draft version already exists: edit or approve it first."), field="change_summary")
    if not (change_summary or "").strip():
        raise refuse(_("Nothing was saved."), [("change_summary", _("Say what this version changes."))])
    latest = specification.versions[-1] if specification.versions else None
    number = (db.session.scalar(select(func.max(SpecificationVersion.version_number)).where(
        SpecificationVersion.specification_id == specification.id)) or 0) + 1
    with work(user, "specification.new_draft"):
        version = SpecificationVersion(specification=specification, version_number=number, status=SpecStatus.DRAFT,
                                       change_summary=change_summary.strip(), created_by_id=user.id,
                                       created_at=utcnow())
        db.session.add(version)
        for criterion in (latest.criteria if latest else []):
            row = _criterion_row(criterion.position, criterion.as_rule())
            row.spec_version = version
            db.session.add(row)
    return version


def _require_draft(version: SpecificationVersion) -> None:
    if version.status != SpecStatus.DRAFT:
        raise InvalidTransition(_("Only a draft version can be changed; this one is %(status)s.",
                                  status=SpecStatus(version.status).value))


def save_criterion(user: User, version: SpecificationVersion, data: CriterionInput,
                   criterion: SpecCriterion | None = None) -> SpecCriterion:
    """Add a criterion to a draft version, or change one of its criteria."""
    require_role(user, Role.QA)
    _require_draft(version)
    problems = criterion_problems(data)
    code = (data.test_code or "").strip().upper()
    clash = version.criterion(code)
    if clash is not None and clash is not criterion:
        problems.append(("test_code", _("Test %(code)s is already in this version.", code=code)))
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    with work(user, "specification.criterion"):
        row = _criterion_row(criterion.position if criterion else len(version.criteria) + 1, data)
        if criterion is None:
            row.spec_version = version
            db.session.add(row)
            return row
        for attribute in ("test_code", "name", "method", "kind", "unit", "lower_limit", "upper_limit",
                          "expected_text", "may_be_pending"):
            setattr(criterion, attribute, getattr(row, attribute))
    return criterion


def approve_version(user: User, version: SpecificationVersion, check: SignatureCheck) -> SpecificationVersion:
    """QA approves a draft with an e-signature; the version approved before it is superseded."""
    require_role(user, Role.QA)
    _require_draft(version)
    if not version.criteria:
        raise RuleViolation(_("A specification version needs at least one criterion."))
    with work(user, "specification.approve"):
        _require_draft(version)  # re-read under the write lock
        now = utcnow()
        for previous in version.specification.versions:
            if previous.status == SpecStatus.APPROVED:
                previous.superseded_at = now
                previous.status = SpecStatus.SUPERSEDED
        version.approved_at = now
        version.approved_by_id = user.id
        version.status = SpecStatus.APPROVED
        sign(check, version)
    return version


def install_default_specification(qa_user: User, effective_from: dt.datetime,
                                  check: SignatureCheck) -> SpecificationVersion:
    """Create the default specification (DESIGN.md "Release rules") as version 1, approved by
    ``qa_user`` and in force from ``effective_from`` (demo data and installation). Idempotent."""
    from labsys.release.defaults import DEFAULT_CRITERIA, DEFAULT_SPECIFICATION_TITLE

    existing = find_specification()
    if existing is not None:
        return existing.versions[0]
    require_role(qa_user, Role.QA)
    with work(qa_user, "specification.install_default"):
        specification = Specification(code=specification_code(), title=DEFAULT_SPECIFICATION_TITLE)
        version = SpecificationVersion(specification=specification, version_number=1, status=SpecStatus.APPROVED,
                                       change_summary="Default specification (DESIGN.md, Release rules)",
                                       created_by_id=qa_user.id, created_at=effective_from,
                                       approved_at=effective_from, approved_by_id=qa_user.id)
        db.session.add_all([specification, version])
        for position, criterion in enumerate(DEFAULT_CRITERIA, start=1):
            row = _criterion_row(position, criterion)
            row.spec_version = version
            db.session.add(row)
        sign(check, version)
    return version
