"""The QA decision on a lot: evaluate every rule, release or reject with an e-signature, and act
on late results for lots released with results pending (pass → released; fail → recalled)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from labsys.audit.services import chain_head
from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches.models import Batch, Vial
from labsys.batches.rules import Eligibility
from labsys.batches.services import apply_batch_transition, open_deviations, unverified_entries
from labsys.batches.states import BatchStatus, VialStatus
from labsys.batches.vials import apply_vial_transition, vials_of
from labsys.db import utcnow
from labsys.errors import ConcurrentChange, InvalidTransition, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.release import hooks
from labsys.release.models import DecisionKind, QCResult, Recall, ReleaseDecision, SpecificationVersion
from labsys.release.results import current_result, current_results, require_not_involved
from labsys.release.rules import (BatchFacts, Disposition, Evaluation, ResultFact, Verdict, evaluate_release,
                                  CRITERION_RULES)
from labsys.release.specs import applicable_version, require_role, work

DISPENSED_STATES = (VialStatus.DISPENSED, VialStatus.ADMINISTERED)
UNDISPENSED_STATES = (VialStatus.QUARANTINE, VialStatus.AVAILABLE, VialStatus.ALLOCATED, VialStatus.THAWED)


def facts_for(batch: Batch) -> BatchFacts:
    """The snapshot the rules judge: donor, deviations, passages, results and potency."""
    eligibility = batch.donor.eligibility
    results = current_results(batch)
    return BatchFacts(
        donor_eligible=None if eligibility == Eligibility.PENDING else eligibility == Eligibility.ELIGIBLE,
        open_deviation_count=len(open_deviations(batch)),
        max_passage=batch.max_passage_number,
        passage_limit=int(current_app.config.get("MAX_PASSAGE", 5)),
        unverified_result_count=sum(1 for r in results if not r.pending and not r.is_verified),
        unverified_entry_count=len(unverified_entries(batch)),
        potency=hooks.potency_for(batch.identifier),
        results={r.test_code: ResultFact(numeric_value=r.numeric_value, text_value=r.text_value, unit=r.unit,
                                         pending=r.pending) for r in results},
    )


@dataclass
class Review:
    batch: Batch
    version: SpecificationVersion | None
    evaluation: Evaluation | None

    @property
    def disposition(self) -> Disposition | None:
        return None if self.evaluation is None else self.evaluation.disposition


def review_of(batch: Batch) -> Review:
    version = applicable_version(batch)
    if version is None:
        return Review(batch, None, None)
    return Review(batch, version, evaluate_release(version.rule_criteria(), facts_for(batch)))


def evaluation_snapshot(evaluation: Evaluation) -> str:
    return json.dumps([{"code": o.code, "name": o.name, "verdict": o.verdict.value, "message": o.message,
                        "message_id": o.message_id, "params": dict(o.params), "limit": o.limit,
                        "result": o.result, "may_be_pending": o.may_be_pending} for o in evaluation.outcomes],
                      ensure_ascii=False, sort_keys=True)


def decision_of(batch: Batch) -> ReleaseDecision | None:
    return db.session.scalar(select(ReleaseDecision).where(ReleaseDecision.batch_id == batch.id))


def decide_lot(user: User, batch: Batch, release: bool, check: SignatureCheck, comment: str | None,
               expected_version: int | None) -> ReleaseDecision:
    """QA releases or rejects a lot in quarantine. Release needs every rule to pass, or only
    may-be-pending criteria pending (→ ``released_pending``). The batch update is conditional on
    its status and version, so of two QA users deciding at once exactly one decision is recorded.
    Release makes the quarantined vials available; rejection marks them destroyed (pending disposal)."""
    require_role(user, Role.QA)
    try:
        return _decide(user, batch, release, check, comment, expected_version)
    except IntegrityError:
        # The unique decision per lot: another QA user's decision committed first.
        raise ConcurrentChange(_("Another decision on lot %(id)s was recorded at the same time.", id=batch.identifier))


def _decide(user: User, batch: Batch, release: bool, check: SignatureCheck, comment: str | None,
            expected_version: int | None) -> ReleaseDecision:
    with work(user, "lot.release" if release else "lot.reject", comment):
        # Everything below is read under the write lock.
        if BatchStatus(batch.status) != BatchStatus.QUARANTINE:
            raise InvalidTransition(_("Lot %(id)s is not awaiting a QA decision (it is %(status)s).",
                                      id=batch.identifier, status=BatchStatus(batch.status).value))
        if expected_version is not None and batch.version != expected_version:
            raise ConcurrentChange(_("Lot %(id)s changed since you opened the review. Reload and review again.",
                                     id=batch.identifier))
        require_not_involved(user, batch)
        review = review_of(batch)
        if review.evaluation is None or review.version is None:
            raise RuleViolation(_("No specification version was approved when this lot was filled."))
        if release:
            if review.disposition == Disposition.NOT_RELEASABLE:
                raise RuleViolation(_("Lot %(id)s does not meet its specification.", id=batch.identifier),
                                    [o.message for o in review.evaluation.outcomes
                                     if o.verdict in (Verdict.FAIL, Verdict.OOS)
                                     or (o.verdict == Verdict.PENDING and not o.may_be_pending)])
            kind = (DecisionKind.RELEASED_PENDING if review.disposition == Disposition.RELEASABLE_PENDING
                    else DecisionKind.RELEASED)
        else:
            if not (comment or "").strip():
                raise RuleViolation(_("Say why the lot is rejected."), [_("A comment is required to reject.")],
                                    field="sign_comment")
            kind = DecisionKind.REJECTED
        head = chain_head(db.session)
        apply_batch_transition(batch, BatchStatus(kind.value))
        actor = actor_of(user)
        for vial in vials_of(batch, VialStatus.QUARANTINE):
            if release:
                apply_vial_transition(actor, vial, VialStatus.AVAILABLE, note=f"lot {kind.value}")
            else:
                apply_vial_transition(actor, vial, VialStatus.DESTROYED, note="lot rejected; pending disposal")
        decision = ReleaseDecision(batch_id=batch.id, specification_version_id=review.version.id, decision=kind,
                                   decided_at=utcnow(), decided_by_id=user.id,
                                   comment=(comment or "").strip() or None,
                                   evaluation_json=evaluation_snapshot(review.evaluation), chain_head_hash=head,
                                   certificate_number=f"COA-{batch.identifier}")
        db.session.add(decision)
        sign(check, decision)
    return decision


def apply_late_result(user: User, batch: Batch, result: QCResult) -> None:
    """Inside the caller's unit of work: a verified result of a may-be-pending criterion for a lot
    released with results pending decides the lot — pass → released; fail → recalled (every
    undispensed vial recalled; dispensed vials are listed on the recall page)."""
    if BatchStatus(batch.status) != BatchStatus.RELEASED_PENDING or result.pending:
        return
    version = db.session.get(SpecificationVersion, result.specification_version_id)
    criterion = version.criterion(result.test_code) if version else None
    if criterion is None or not criterion.may_be_pending:
        return
    rule = criterion.as_rule()
    outcome = CRITERION_RULES[rule.kind](rule, ResultFact(numeric_value=result.numeric_value,
                                                          text_value=result.text_value, unit=result.unit))
    if outcome.verdict == Verdict.PASS:
        still_pending = [c for c in version.criteria if c.may_be_pending and c.test_code != result.test_code
                         and (current_result(batch, c.test_code) is None
                              or current_result(batch, c.test_code).pending)]
        if not still_pending:
            apply_batch_transition(batch, BatchStatus.RELEASED)
        return
    apply_batch_transition(batch, BatchStatus.RECALLED)
    actor = actor_of(user)
    for vial in vials_of(batch):
        if VialStatus(vial.status) in UNDISPENSED_STATES:
            apply_vial_transition(actor, vial, VialStatus.RECALLED, note=f"lot recalled: {outcome.message}")
    db.session.add(Recall(batch_id=batch.id, result_id=result.id, recalled_at=utcnow(), recalled_by_id=user.id,
                          reason=outcome.message))


def recall_of(batch: Batch) -> Recall | None:
    return db.session.scalar(select(Recall).where(Recall.batch_id == batch.id))


def dispensed_vials(batch: Batch) -> list[tuple[Vial, str | None]]:
    """Vials of the lot already dispensed or administered, with the patient's study ID when a
    feature that knows it has registered a lookup."""
    vials = [v for v in vials_of(batch) if VialStatus(v.status) in DISPENSED_STATES]
    patients = hooks.patients_of(vials)
    return [(vial, patients.get(vial.id)) for vial in vials]


def recalls() -> list[Recall]:
    return list(db.session.scalars(select(Recall).order_by(Recall.recalled_at.desc())))


def lots_awaiting_decision() -> list[Batch]:
    return list(db.session.scalars(select(Batch).where(Batch.status == BatchStatus.QUARANTINE)
                                   .order_by(Batch.identifier)))


def lots_pending_results() -> list[Batch]:
    return list(db.session.scalars(select(Batch).where(Batch.status == BatchStatus.RELEASED_PENDING)
                                   .order_by(Batch.identifier)))


def evaluation_rows(decision: ReleaseDecision) -> list[dict[str, Any]]:
    return json.loads(decision.evaluation_json)
