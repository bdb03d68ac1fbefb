"""Release services on both engines: specifications, results, verification, corrections, the
QA decision, late results and recall, trial selection."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck, signatures_for
from labsys.batches.models import Batch
from labsys.batches.services import assess_deviation, close_deviation, raise_deviation
from labsys.batches.states import BatchStatus, VialStatus
from labsys.errors import ConcurrentChange, Forbidden, InvalidTransition, RuleViolation
from labsys.release import decisions, results, selection, specs
from labsys.release.models import DecisionKind, QCResult, ReleaseDecision, SpecStatus
from labsys.release.defaults import DEFAULT_CRITERIA
from labsys.release.rules import Disposition, Verdict

from .conftest import enter_results, passing_potency, result_input


def release_check(user, meaning=SignatureMeaning.RELEASED, comment="meets specification"):
    return SignatureCheck(user, meaning, comment)


def test_the_default_specification_is_approved_and_judges_filled_lots(lots, spec, users):
    batch = lots.lot()
    version = specs.applicable_version(batch)
    assert version.id == spec.id and version.status == SpecStatus.APPROVED
    assert [c.test_code for c in version.criteria] == [c.test_code for c in DEFAULT_CRITERIA]
    assert signatures_for(version)[0].meaning == SignatureMeaning.APPROVED


def test_a_lot_with_every_result_verified_and_potency_is_releasable(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    review = decisions.review_of(batch)
    assert [o.code for o in review.evaluation.outcomes if o.verdict != Verdict.PASS] == []
    assert review.disposition == Disposition.RELEASABLE


def test_an_unverified_fill_blocks_release_until_a_second_person_verifies_it(lots, users, potency_runs):
    from labsys.batches import vials as vial_services

    batch = lots.lot(verify_fill=False)
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    review = decisions.review_of(batch)
    assert [(o.code, o.verdict) for o in review.evaluation.outcomes if o.verdict != Verdict.PASS] == [
        ("ENTRIES", Verdict.PENDING)]
    assert review.disposition == Disposition.NOT_RELEASABLE
    with pytest.raises(RuleViolation) as refused:
        decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    assert "1 batch record entry(ies) (passage counts, fill) await second-person verification." in refused.value.reasons
    assert batch.status == BatchStatus.QUARANTINE
    vial_services.verify_fill(users["technician2"], batch.fill, 10_000_000, Decimal("93.0"),
                              SignatureCheck(users["technician2"], SignatureMeaning.VERIFIED, "t"))
    assert decisions.review_of(batch).disposition == Disposition.RELEASABLE


def test_qa_release_makes_vials_available_and_records_one_signed_decision(lots, users, potency_runs, db):
    batch = lots.lot(vial_count=3)
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    decision = decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), "ok", batch.version)
    db.session.rollback()
    batch = db.session.get(Batch, batch.id)
    assert batch.status == BatchStatus.RELEASED
    assert {v.status for v in batch.vials} == {VialStatus.AVAILABLE}
    decision = db.session.get(ReleaseDecision, decision.id)
    assert decision.decision == DecisionKind.RELEASED and len(decision.chain_head_hash) == 64
    assert signatures_for(decision)[0].meaning == SignatureMeaning.RELEASED
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.entity_type == "batches",
                                                       AuditEntry.entity_id == str(batch.id),
                                                       AuditEntry.action == "lot.release"))
    assert '"quarantine"' in entry.old_values and '"released"' in entry.new_values


def test_release_is_refused_with_every_failing_rule(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch, overrides={"VIABILITY": ("75", "%"), "CD45": ("3.5", "%")})
    passing_potency(potency_runs, batch, value="12")
    with pytest.raises(RuleViolation) as refused:
        decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    text = " ".join(refused.value.reasons)
    assert "75 %" in text and "3.5 %" in text and "12 %" in text
    assert batch.status == BatchStatus.QUARANTINE


def test_rejection_destroys_the_vials_pending_disposal_and_needs_a_comment(lots, users, potency_runs, db):
    batch = lots.lot(vial_count=2)
    with pytest.raises(RuleViolation):
        decisions.decide_lot(users["qa"], batch, False, release_check(users["qa"], SignatureMeaning.REJECTED, None),
                             None, None)
    decisions.decide_lot(users["qa"], batch, False, release_check(users["qa"], SignatureMeaning.REJECTED),
                         "Viability below limit", None)
    db.session.rollback()
    batch = db.session.get(Batch, batch.id)
    assert batch.status == BatchStatus.REJECTED
    assert {v.status for v in batch.vials} == {VialStatus.DESTROYED}


def test_deciding_a_lot_not_awaiting_decision_is_a_clear_error(lots, users, potency_runs):
    batch = lots.lot()
    decisions.decide_lot(users["qa"], batch, False, release_check(users["qa"], SignatureMeaning.REJECTED), "no", None)
    with pytest.raises(InvalidTransition, match="not awaiting a QA decision"):
        decisions.decide_lot(users["qa"], batch, False, release_check(users["qa"], SignatureMeaning.REJECTED), "no",
                             None)


def test_qa_who_entered_or_verified_a_result_cannot_release_the_lot(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch, skip=("KARYOTYPE",))
    result = results.enter_result(users["qa"], batch, result_input("KARYOTYPE", "normal"))
    results.verify_result(users["technician2"], result)
    passing_potency(potency_runs, batch)
    with pytest.raises(Forbidden):
        decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    decision = decisions.decide_lot(users["qa2"], batch, True, release_check(users["qa2"]), None, None)
    assert decision.decision == DecisionKind.RELEASED


def test_a_stale_review_is_refused(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    with pytest.raises(ConcurrentChange):
        decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, batch.version - 1)


def test_pending_sterility_releases_as_pending_and_a_late_pass_releases_fully(lots, users, potency_runs, db):
    batch = lots.lot()
    enter_results(users, batch, overrides={"STERILITY": ("pending", None)})
    passing_potency(potency_runs, batch)
    decision = decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    assert decision.decision == DecisionKind.RELEASED_PENDING
    pending = results.current_result(batch, "STERILITY")
    late = results.correct_result(users["technician"], pending, result_input("STERILITY", "no growth"),
                                  "14-day culture read")
    assert db.session.get(Batch, batch.id).status == BatchStatus.RELEASED_PENDING  # not yet verified
    results.verify_result(users["technician2"], late)
    db.session.rollback()
    assert db.session.get(Batch, batch.id).status == BatchStatus.RELEASED


def test_a_late_sterility_failure_recalls_the_lot_and_lists_dispensed_vials(lots, users, potency_runs, db, app):
    from labsys.batches.vials import apply_vial_transition
    from labsys.audit.services import Actor, unit_of_work
    from labsys.release.hooks import register_patient_lookup

    batch = lots.lot(vial_count=4)
    enter_results(users, batch, overrides={"STERILITY": ("pending", None)})
    passing_potency(potency_runs, batch)
    decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    vial = db.session.get(Batch, batch.id).vials[0]
    with unit_of_work(Actor.system("test"), "vial.dispense"):
        for status in (VialStatus.ALLOCATED, VialStatus.THAWED, VialStatus.DISPENSED):
            apply_vial_transition(Actor.system("test"), vial, status)
    register_patient_lookup(app, lambda vials: {v.id: f"PT-{v.division:03d}" for v in vials})
    pending = results.current_result(batch, "STERILITY")
    late = results.correct_result(users["technician"], pending, result_input("STERILITY", "growth"), "culture positive")
    results.verify_result(users["technician2"], late)
    db.session.rollback()
    batch = db.session.get(Batch, batch.id)
    assert batch.status == BatchStatus.RECALLED
    statuses = sorted(v.status.value for v in batch.vials)
    assert statuses == ["dispensed", "recalled", "recalled", "recalled"]
    assert [(v.identifier, patient) for v, patient in decisions.dispensed_vials(batch)] == [(vial.identifier, "PT-001")]
    assert "growth" in decisions.recall_of(batch).reason


def test_results_are_checked_field_by_field_and_nothing_is_written(lots, users, db):
    batch = lots.lot()
    cases = [
        (result_input("VIABILITY", "ninety", "%"), "value"),
        (result_input("VIABILITY", "90", "mg"), "unit"),
        (result_input("GLUCOSE", "5", "mmol/L"), "test_code"),
        (result_input("KARYOTYPE", "normal", pending=True), "value"),
        (result_input("BV2_POTENCY", "30", "%"), "test_code"),
        (result_input("APPEARANCE", "cloudy"), "value"),
    ]
    for data, field in cases:
        with pytest.raises(RuleViolation) as refused:
            results.enter_result(users["technician"], batch, data)
        assert field in [f for f, _m in refused.value.problems], (data, refused.value.problems)
    assert db.session.scalar(select(QCResult.id)) is None


def test_the_person_who_entered_a_result_cannot_verify_it(lots, users):
    batch = lots.lot()
    result = results.enter_result(users["technician"], batch, result_input("VIABILITY", "90", "%"))
    with pytest.raises(RuleViolation, match="not verified"):
        results.verify_result(users["technician"], result)
    results.verify_result(users["technician2"], result)
    assert result.verified_by_id == users["technician2"].id


def test_a_correction_keeps_the_old_value_and_needs_a_reason(lots, users, db):
    batch = lots.lot()
    old = results.enter_result(users["technician"], batch, result_input("ENDOTOXIN", "0.2", "EU/mL"))
    with pytest.raises(RuleViolation):
        results.correct_result(users["technician"], old, result_input("ENDOTOXIN", "0.3", "EU/mL"), "  ")
    new = results.correct_result(users["technician"], old, result_input("ENDOTOXIN", "0.3", "EU/mL"),
                                 "transcription error")
    db.session.rollback()
    old, new = db.session.get(QCResult, old.id), db.session.get(QCResult, new.id)
    assert old.numeric_value == Decimal("0.2") and old.superseded_by_id == new.id
    assert new.supersedes_id == old.id and new.correction_reason == "transcription error"
    assert results.current_result(batch, "ENDOTOXIN").id == new.id
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "qc_result.correct",
                                                       AuditEntry.entity_id == str(old.id)))
    assert entry.reason == "transcription error"


def test_the_flow_panel_is_written_whole_or_not_at_all(lots, users, db):
    batch = lots.lot()
    from labsys.release.defaults import FLOW_PANEL

    bad = [result_input(code, "abc" if code == "CD45" else "99", "%") for code in FLOW_PANEL]
    with pytest.raises(RuleViolation) as refused:
        results.enter_panel(users["technician"], batch, bad)
    assert [f for f, _m in refused.value.problems] == ["cd45-value"]
    assert db.session.scalar(select(QCResult.id)) is None
    good = [result_input(code, "99" if code in ("CD73", "CD90", "CD105") else "1", "%") for code in FLOW_PANEL]
    saved = results.enter_panel(users["technician"], batch, good)
    assert len(saved) == 8 and len({r.panel_key for r in saved}) == 1


def test_approving_a_new_version_supersedes_the_old_and_old_lots_keep_theirs(lots, users, spec, db):
    batch = lots.lot()
    draft = specs.new_draft(users["qa"], spec.specification, "Tighter endotoxin")
    endotoxin = draft.criterion("ENDOTOXIN")
    specs.save_criterion(users["qa"], draft, specs.CriterionInput("ENDOTOXIN", "Endotoxin", "numeric", "EU/mL",
                                                                  None, Decimal("0.25")), endotoxin)
    specs.approve_version(users["qa"], draft, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, None))
    db.session.rollback()
    old = db.session.get(type(spec), spec.id)
    assert old.status == SpecStatus.SUPERSEDED and old.superseded_at is not None
    assert specs.current_version().id == draft.id
    assert specs.applicable_version(db.session.get(Batch, batch.id)).id == spec.id
    with pytest.raises(InvalidTransition):
        specs.save_criterion(users["qa"], draft, specs.CriterionInput("X", "X", "text", expected_text="y"))


def test_only_released_lots_can_be_selected_for_the_trial(lots, users, potency_runs):
    first, second = lots.lot(), lots.lot()
    for batch, value in ((first, "28"), (second, "41")):
        enter_results(users, batch)
        passing_potency(potency_runs, batch, value)
    with pytest.raises(InvalidTransition):
        selection.select_for_trial(users["qa"], first, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, None))
    decisions.decide_lot(users["qa"], first, True, release_check(users["qa"]), None, None)
    assert [c.batch.identifier for c in selection.candidates()] == [second.identifier, first.identifier]
    assert not selection.is_selected_for_trial(first)
    selection.select_for_trial(users["qa"], first, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "best"))
    assert selection.is_selected_for_trial(first)


def test_an_open_deviation_blocks_release_until_qa_closes_it(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch)
    passing_potency(potency_runs, batch)
    deviation = raise_deviation(users["technician"], "Incubator alarm for 20 minutes at P1", batch=batch)
    outcomes = {o.code: o for o in decisions.review_of(batch).evaluation.outcomes}
    assert outcomes["DEVIATIONS"].verdict == Verdict.FAIL and "1 deviation(s)" in outcomes["DEVIATIONS"].message
    with pytest.raises(RuleViolation):
        decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None)
    assess_deviation(users["technician"], deviation, "Temperature stayed within 36-38 C", "Alarm relay replaced")
    close_deviation(users["qa2"], deviation, SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "closed"))
    assert decisions.decide_lot(users["qa"], batch, True, release_check(users["qa"]), None, None).decision \
        == DecisionKind.RELEASED

