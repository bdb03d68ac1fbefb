"""Services on both database legs: every rule enforced, nothing partial saved, everything audited."""
import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from labsys.audit.models import AuditEntry
from labsys.auth.models import Signature, SignatureMeaning
from labsys.batches import services, vials as vial_services
from labsys.batches.models import (Batch, CordStatus, Deviation, DeviationStatus, Inspection, LabelPrint, Passage,
                                   StepType, Vial, VialEvent)
from labsys.batches.rules import Eligibility, Marker, MarkerResult, ReagentStatus
from labsys.batches.states import BatchStatus, VialStatus
from labsys.documents.isbt import mod37_2_check
from labsys.errors import ConcurrentChange, Forbidden, InvalidTransition, RuleViolation

from .conftest import CLEAN
from tests.conftest import lab_today


def count(db, model):
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


def audit_rows(db, entity_type, entity_id=None):
    query = select(AuditEntry).where(AuditEntry.entity_type == entity_type)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == str(entity_id))
    return db.session.scalars(query.order_by(AuditEntry.seq)).all()


# ---------------------------------------------------------------- donors and eligibility
def test_qa_signs_the_eligibility_computed_from_the_markers(db, lab):
    donor = lab.donor()
    assert donor.eligibility == Eligibility.ELIGIBLE and donor.eligibility_determined_by_id == lab.qa.id
    signature = db.session.scalars(select(Signature).where(Signature.entity_type == "donors")).one()
    assert signature.meaning == SignatureMeaning.APPROVED and signature.user_id == lab.qa.id


def test_a_reactive_marker_is_signed_ineligible(db, lab):
    donor = lab.donor(markers={**CLEAN, Marker.HIV_NAT: MarkerResult.REACTIVE})
    assert donor.eligibility == Eligibility.INELIGIBLE


def test_a_technician_cannot_determine_eligibility(db, lab):
    donor = lab.donor(determine=False)
    with pytest.raises(Forbidden):
        services.determine_eligibility(lab.tech, donor, lab.check(lab.tech))
    assert donor.eligibility == Eligibility.PENDING


def test_pending_markers_cannot_be_signed(db, lab):
    donor = lab.donor(markers={**CLEAN, Marker.CMV: MarkerResult.NOT_TESTED}, determine=False)
    with pytest.raises(RuleViolation) as refused:
        services.determine_eligibility(lab.qa, donor, lab.check(lab.qa))
    assert any("CMV" in r for r in refused.value.reasons)
    assert count(db, Signature) == 0


def test_donor_codes_are_unique(db, lab):
    lab.donor("D-9", determine=False)
    with pytest.raises(RuleViolation) as refused:
        lab.donor("d-9", determine=False)
    assert refused.value.problems[0][0] == "code"


def test_correcting_a_signed_donor_needs_a_reason_and_returns_it_to_pending(db, lab):
    donor = lab.donor()
    with pytest.raises(RuleViolation):
        services.update_donor(lab.tech, donor, None, donor.consent_date, donor.screening_outcome,
                              donor.specimen_date, {Marker.CMV: MarkerResult.REACTIVE})
    services.update_donor(lab.tech, donor, "Lab report corrected", donor.consent_date, donor.screening_outcome,
                          donor.specimen_date, {Marker.CMV: MarkerResult.REACTIVE})
    assert donor.eligibility == Eligibility.PENDING
    entry = audit_rows(db, "donors", donor.id)[-1]
    assert entry.reason == "Lab report corrected"
    assert json.loads(entry.old_values)["cmv"] == "non_reactive" and json.loads(entry.new_values)["cmv"] == "reactive"


# ---------------------------------------------------------------- cords
def test_a_cord_beyond_the_receipt_limit_is_refused_and_nothing_is_saved(db, lab):
    from labsys.batches.models import Cord

    donor = lab.donor()
    with pytest.raises(RuleViolation) as refused:
        lab.cord(donor, hours_ago=60, transit_hours=30)
    assert [f for f, _ in refused.value.problems] == ["received_at"]
    assert count(db, Cord) == 0


def test_a_cord_outside_limits_may_be_accepted_only_under_a_deviation(db, lab):
    donor = lab.donor()
    collected = lab.now - dt.timedelta(hours=50)
    with pytest.raises(RuleViolation) as refused:
        services.receive_cord(lab.tech, donor, collected, collected + dt.timedelta(hours=3), Decimal("12"),
                              Decimal("40"), Inspection.CONFORMS, None, "vaginal", 39, accept_under_deviation=True)
    assert "deviation_description" in [f for f, _ in refused.value.problems]
    cord = services.receive_cord(lab.tech, donor, collected, collected + dt.timedelta(hours=3), Decimal("12"),
                                 Decimal("40"), Inspection.CONFORMS, None, "vaginal", 39,
                                 accept_under_deviation=True, deviation_description="Cool box failed")
    assert cord.status == CordStatus.ACCEPTED_UNDER_DEVIATION
    deviation = db.session.scalars(select(Deviation)).one()
    assert deviation.cord_id == cord.id and deviation.status == DeviationStatus.OPEN
    batch = services.start_batch(lab.tech, cord)
    assert services.open_deviations(batch) == [deviation]


def test_a_cord_whose_donor_specimen_is_outside_seven_days_is_refused(db, lab):
    donor = lab.donor(specimen_days_ago=12)
    with pytest.raises(RuleViolation) as refused:
        lab.cord(donor, hours_ago=10)
    assert "collected_at" in [f for f, _ in refused.value.problems]


# ---------------------------------------------------------------- batches
def test_only_an_eligible_donors_cord_can_start_a_batch(db, lab):
    donor = lab.donor(markers={**CLEAN, Marker.HCV_NAT: MarkerResult.NOT_TESTED}, determine=False)
    cord = lab.cord(donor)
    with pytest.raises(RuleViolation):
        services.start_batch(lab.tech, cord)
    assert count(db, Batch) == 0


def test_batches_get_consecutive_donation_identifiers_with_check_characters(db, lab, app):
    first, second = lab.batch("D-1"), lab.batch("D-2")
    year = f"{first.started_at.year % 100:02d}"
    assert first.identifier == f"{app.config['FACILITY_CODE']}{year}000001"
    assert second.identifier == f"{app.config['FACILITY_CODE']}{year}000002"
    assert first.check_character == mod37_2_check(first.identifier)


def test_one_cord_makes_one_batch(db, lab):
    batch = lab.batch()
    with pytest.raises(RuleViolation):
        services.start_batch(lab.tech, batch.cord)


# ---------------------------------------------------------------- passages and verification
def test_passages_compute_population_doublings_and_their_running_total(db, lab):
    batch = lab.batch()
    p0 = lab.passage(batch, 0, harvested=2_000_000)
    p1 = lab.passage(batch, 1, seeded=1_000_000, harvested=8_000_000)
    p2 = lab.passage(batch, 2, seeded=1_000_000, harvested=3_000_000)
    assert p0.population_doublings is None and p0.cumulative_population_doublings == 0
    assert p1.population_doublings == Decimal("3.000")
    assert p2.cumulative_population_doublings == Decimal("3.000") + Decimal("1.585")
    assert batch.max_passage_number == 2


def test_a_passage_beyond_the_configured_limit_is_refused_and_nothing_is_saved(db, lab, app):
    app.config["MAX_PASSAGE"] = 1
    batch = lab.batch()
    lab.passage(batch, 0)
    lab.passage(batch, 1)
    steps_before = len(batch.steps)
    with pytest.raises(RuleViolation) as refused:
        lab.passage(batch, 2)
    assert "passage_number" in [f for f, _ in refused.value.problems]
    assert count(db, Passage) == 2
    db.session.refresh(batch)
    assert len(batch.steps) == steps_before


def test_expired_unreleased_or_unknown_reagent_lots_are_refused(db, lab):
    batch = lab.batch()
    expired = lab.reagent("Trypsin", "T-OLD", expires_in_days=-10)  # before the day of use
    quarantined = lab.reagent("Medium", "M-Q", status=ReagentStatus.QUARANTINE)
    good = lab.reagent("PBS", "P-1")
    with pytest.raises(RuleViolation) as refused:
        lab.passage(batch, 0, reagent_ids=[expired.id, quarantined.id, good.id, 99999])
    assert len([f for f, _ in refused.value.problems if f == "reagent_ids"]) == 3
    assert count(db, Passage) == 0
    passage = lab.passage(batch, 0, reagent_ids=[good.id])
    assert [u.reagent.lot for u in passage.step.reagent_uses] == ["P-1"]


def test_the_person_who_entered_a_count_cannot_verify_it(db, lab):
    batch = lab.batch()
    passage = lab.passage(batch, 0, verify=False)
    with pytest.raises(RuleViolation):
        services.verify_passage(lab.tech, passage, passage.harvested_viable_cells, passage.viability_percent,
                                lab.check(lab.tech, SignatureMeaning.VERIFIED))
    assert services.unverified_entries(batch) == [passage]


def test_verification_with_different_values_is_refused(db, lab):
    batch = lab.batch()
    passage = lab.passage(batch, 0, harvested=2_000_000, verify=False)
    with pytest.raises(RuleViolation) as refused:
        services.verify_passage(lab.tech2, passage, 2_000_001, Decimal("95.0"),
                                lab.check(lab.tech2, SignatureMeaning.VERIFIED))
    assert [f for f, _ in refused.value.problems] == ["harvested_viable_cells"]
    assert not passage.is_verified


def test_a_second_person_verifies_with_a_signature(db, lab):
    batch = lab.batch()
    passage = lab.passage(batch, 0)
    assert passage.verified_by_id == lab.tech2.id
    signature = db.session.scalars(select(Signature).where(Signature.entity_type == "passages")).one()
    assert signature.meaning == SignatureMeaning.VERIFIED
    assert services.unverified_entries(batch) == []


def test_the_database_refuses_a_verifier_who_is_the_enterer(db, lab):
    batch = lab.batch()
    passage = lab.passage(batch, 0, verify=False)
    db.session.rollback()
    with pytest.raises((IntegrityError, DBAPIError)):
        db.session.execute(text("UPDATE passages SET verified_by_id = entered_by_id WHERE id = :id"), {"id": passage.id})
        db.session.flush()
    db.session.rollback()


def test_a_correction_needs_a_reason_recomputes_doublings_and_clears_verification(db, lab):
    batch = lab.batch()
    lab.passage(batch, 0)
    p1 = lab.passage(batch, 1, seeded=1_000_000, harvested=4_000_000)
    with pytest.raises(RuleViolation):
        services.correct_passage(lab.tech, p1, "", 1_000_000, 8_000_000, Decimal("95"), None, 2)
    services.correct_passage(lab.tech, p1, "Transcription error", 1_000_000, 8_000_000, Decimal("95"), None, 2)
    assert p1.population_doublings == Decimal("3.000") and not p1.is_verified
    corrections = [e for e in audit_rows(db, "passages", p1.id) if e.reason == "Transcription error"]
    assert len(corrections) == 1
    assert json.loads(corrections[0].old_values)["harvested_viable_cells"] == 4_000_000
    assert json.loads(corrections[0].new_values)["harvested_viable_cells"] == 8_000_000


# ---------------------------------------------------------------- deviations
def test_a_deviation_is_closed_by_qa_with_a_signature_after_assessment(db, lab):
    batch = lab.batch()
    deviation = services.raise_deviation(lab.tech, "Incubator alarm 2 h", batch=batch)
    assert services.open_deviations(batch) == [deviation]
    with pytest.raises(RuleViolation):
        services.close_deviation(lab.qa, deviation, lab.check(lab.qa))
    services.assess_deviation(lab.tech, deviation, "No impact: temperature stayed 36.5-37.5 °C", "Replace sensor")
    with pytest.raises(Forbidden):
        services.close_deviation(lab.tech, deviation, lab.check(lab.tech))
    services.close_deviation(lab.qa, deviation, lab.check(lab.qa))
    assert services.open_deviations(batch) == []
    assert deviation.closed_by_id == lab.qa.id


# ---------------------------------------------------------------- fill, vials, storage
def test_fill_is_refused_while_a_critical_entry_awaits_verification(db, lab):
    batch = lab.batch()
    last = lab.passage(batch, 0, harvested=50_000_000, verify=False)
    at = last.step.ended_at + dt.timedelta(hours=1)
    with pytest.raises(RuleViolation) as refused:
        vial_services.fill_batch(lab.tech, batch, 3, 1_000_000, Decimal("5"), "DMSO", Decimal("90"), at, "BSC")
    assert any("verification" in m for _, m in refused.value.problems)
    assert count(db, Vial) == 0
    db.session.refresh(batch)
    assert batch.status == BatchStatus.IN_PROCESS


def test_fill_creates_every_vial_in_quarantine_and_moves_the_batch_to_quarantine(db, lab):
    batch = lab.filled(vials=5)
    vials = vial_services.vials_of(batch)
    assert [v.identifier for v in vials] == [f"{batch.identifier}{n:03d}" for n in range(1, 6)]
    assert {v.status for v in vials} == {VialStatus.QUARANTINE}
    assert batch.status == BatchStatus.QUARANTINE
    assert [s.step_type for s in batch.steps][-1] == StepType.FILL
    assert len(audit_rows(db, "vials")) == 5


def test_a_filled_batch_takes_no_more_passages(db, lab):
    batch = lab.filled(vials=1)
    with pytest.raises(RuleViolation):
        lab.passage(batch, 2)


def test_vials_are_stored_and_moved_with_custody_events(db, lab):
    batch = lab.filled(vials=3)
    tank = vial_services.create_tank(lab.tech, "LN2-A")
    rack = vial_services.create_rack(lab.tech, tank, "R1")
    box = vial_services.create_box(lab.tech, rack, "BX-1", 3, 3)
    vial_services.store_vials_in_box(lab.tech, vial_services.vials_of(batch), box)
    first, second, _third = vial_services.vials_of(batch)
    assert first.location == "LN2-A/R1/BX-1/A1" and second.location == "LN2-A/R1/BX-1/A2"
    with pytest.raises(RuleViolation) as refused:
        vial_services.store_vial(lab.tech, first, box, 1, 2)
    assert "A2" in refused.value.reasons[0]
    with pytest.raises(RuleViolation):
        vial_services.store_vial(lab.tech, first, box, 4, 1)
    vial_services.store_vial(lab.tech, first, box, 3, 3, "Reorganised")
    events = vial_services.custody_events(first)
    assert [(e.event_type, e.from_location, e.to_location) for e in events] == [
        ("stored", None, "LN2-A/R1/BX-1/A1"), ("moved", "LN2-A/R1/BX-1/A1", "LN2-A/R1/BX-1/C3")]
    assert events[-1].actor_id == lab.tech.id
    grid = vial_services.box_grid(box)
    assert grid[2][2].id == first.id and grid[0][0] is None


def test_a_stored_vial_taken_out_of_use_leaves_its_box_with_a_custody_event(db, lab):
    """Found by the form fuzzer: destroying a vial that sits in a box used to fail with a
    TypeError (the loaded box outlived the cleared position)."""
    batch = lab.filled(vials=1)
    box = vial_services.create_box(lab.tech, vial_services.create_rack(lab.tech, vial_services.create_tank(lab.tech, "T"), "R"), "B", 2, 2)
    vial_services.store_vials_in_box(lab.tech, vial_services.vials_of(batch), box)
    vial = vial_services.vials_of(batch)[0]
    assert vial.location == "T/R/B/A1"
    vial_services.transition_vial(lab.qa, vial, VialStatus.DESTROYED, reason="Dropped in the tank")
    assert vial.status == VialStatus.DESTROYED and vial.location is None and vial.box_id is None
    event = vial_services.custody_events(vial)[-1]
    assert (event.event_type, event.from_location, event.to_location) == ("status.destroyed", "T/R/B/A1", None)
    db.session.rollback()
    assert vial_services.box_grid(box)[0][0] is None


def test_two_vials_cannot_share_a_position_in_the_database(db, lab):
    batch = lab.filled(vials=2)
    tank = vial_services.create_tank(lab.tech, "T")
    box = vial_services.create_box(lab.tech, vial_services.create_rack(lab.tech, tank, "R"), "B", 2, 2)
    vial_services.store_vials_in_box(lab.tech, vial_services.vials_of(batch), box)
    db.session.rollback()
    with pytest.raises(IntegrityError):
        db.session.execute(text('UPDATE vials SET "row" = 1, "column" = 1'))
    db.session.rollback()


def test_custody_events_are_append_only(db, lab):
    batch = lab.filled(vials=1)
    box = vial_services.create_box(lab.tech, vial_services.create_rack(lab.tech, vial_services.create_tank(lab.tech, "T"), "R"), "B", 2, 2)
    vial_services.store_vials_in_box(lab.tech, vial_services.vials_of(batch), box)
    db.session.rollback()
    with pytest.raises(DBAPIError):
        db.session.execute(text("UPDATE vial_events SET note = 'x'"))
    db.session.rollback()
    with pytest.raises(DBAPIError):
        db.session.execute(text("DELETE FROM vial_events"))
    db.session.rollback()
    assert count(db, VialEvent) == 1


def test_vial_states_follow_the_table_in_code_and_in_the_database(db, lab):
    batch = lab.filled(vials=2)
    vial = vial_services.vials_of(batch)[0]
    with pytest.raises(InvalidTransition):
        vial_services.transition_vial(lab.qa, vial, VialStatus.DISPENSED)
    vial_services.transition_vial(lab.qa, vial, VialStatus.AVAILABLE)
    with pytest.raises(RuleViolation):  # leaving available for an end state needs a reason
        vial_services.transition_vial(lab.qa, vial, VialStatus.DESTROYED)
    vial_services.transition_vial(lab.qa, vial, VialStatus.DESTROYED, reason="Dropped")
    assert vial.status == VialStatus.DESTROYED
    assert [e.event_type for e in vial_services.custody_events(vial)] == ["status.available", "status.destroyed"]
    db.session.rollback()
    with pytest.raises(IntegrityError):
        db.session.execute(text("UPDATE vials SET status = 'lost'"))
    db.session.rollback()


def test_a_stale_vial_version_is_a_concurrent_change(db, lab):
    batch = lab.filled(vials=1)
    vial = vial_services.vials_of(batch)[0]
    from labsys.audit.services import unit_of_work
    from labsys.auth.services import actor_of

    with pytest.raises(ConcurrentChange):
        with services.work(lab.qa, "vial.available"):
            vial.status  # loaded under the lock
            db.session.execute(text("UPDATE vials SET version = version + 1 WHERE id = :id"), {"id": vial.id})
            vial_services.apply_vial_transition(actor_of(lab.qa), vial, VialStatus.AVAILABLE)
    assert unit_of_work  # the service boundary rolled back: the vial is still in quarantine
    db.session.rollback()
    assert db.session.get(Vial, vial.id).status == VialStatus.QUARANTINE


def test_label_prints_are_counted_and_a_reprint_needs_a_reason(db, lab):
    batch = lab.filled(vials=2)
    vial_services.record_vial_label_print(lab.tech, batch)
    with pytest.raises(RuleViolation):
        vial_services.record_vial_label_print(lab.tech, batch, "  ")
    vial_services.record_vial_label_print(lab.tech, batch, "Label smudged")
    prints = vial_services.label_prints_of(batch)
    assert [(p.is_reprint, p.reason) for p in prints] == [(False, None), (True, "Label smudged")]
    assert {v.label_prints for v in vial_services.vials_of(batch)} == {2}
    assert len(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "label.print")).all()) == 2


def test_reagent_lots_start_in_quarantine_and_only_qa_decides(db, lab):
    reagent = services.add_reagent(lab.tech, "HPL", "H-1", None, lab_today() + dt.timedelta(days=30),
                                   lab_today())
    assert reagent.status == ReagentStatus.QUARANTINE
    with pytest.raises(Forbidden):
        services.set_reagent_status(lab.tech, reagent, ReagentStatus.RELEASED)
    services.set_reagent_status(lab.qa, reagent, ReagentStatus.RELEASED)
    with pytest.raises(RuleViolation):  # rejecting a released lot is a correction: reason required
        services.set_reagent_status(lab.qa, reagent, ReagentStatus.REJECTED)
    services.set_reagent_status(lab.qa, reagent, ReagentStatus.REJECTED, "Supplier recall")
    assert reagent.status == ReagentStatus.REJECTED


def test_demo_data_loads_once_and_a_second_run_changes_nothing(db, demo_users):
    from labsys.batches.demo import load_demo_data

    load_demo_data()
    before = (count(db, Batch), count(db, Vial), count(db, AuditEntry))
    load_demo_data()
    assert (count(db, Batch), count(db, Vial), count(db, AuditEntry)) == before
    statuses = set(db.session.scalars(select(Batch.status)))
    assert statuses == {BatchStatus.IN_PROCESS, BatchStatus.QUARANTINE}
    assert db.session.scalar(select(func.count()).select_from(Vial).where(Vial.box_id.is_not(None))) == 20


def test_a_cord_that_got_its_batch_meanwhile_is_refused_under_the_lock(db, lab):
    from labsys.batches.models import Cord

    batch = lab.batch()
    cord = db.session.get(Cord, batch.cord_id)
    db.session.expire(cord, ["batch"])
    cord.__dict__["batch"] = None  # a stale view of the cord, as another request would have had
    with pytest.raises(RuleViolation) as refused:
        services.start_batch(lab.tech, cord)
    assert refused.value.reasons == ["This cord already has a batch."]  # the check under the lock
    assert count(db, Batch) == 1


def test_destroying_a_quarantined_vial_needs_a_reason_but_releasing_it_does_not(db, lab):
    batch = lab.filled(vials=2)
    first, second = vial_services.vials_of(batch)
    with pytest.raises(RuleViolation):
        vial_services.transition_vial(lab.qa, first, VialStatus.DESTROYED)
    vial_services.transition_vial(lab.qa, second, VialStatus.AVAILABLE)
    vial_services.transition_vial(lab.qa, second, VialStatus.ALLOCATED)
    with pytest.raises(RuleViolation):  # cancelling an allocation is a correction
        vial_services.transition_vial(lab.qa, second, VialStatus.AVAILABLE)
    vial_services.transition_vial(lab.qa, second, VialStatus.AVAILABLE, reason="Patient withdrawn")
    assert second.status == VialStatus.AVAILABLE and first.status == VialStatus.QUARANTINE


def test_a_pending_donors_cord_is_received_but_an_ineligible_donors_is_refused(db, lab):
    from labsys.batches.models import Cord

    pending = lab.donor("D-P", markers={**CLEAN, Marker.CMV: MarkerResult.NOT_TESTED}, determine=False)
    lab.cord(pending)
    ineligible = lab.donor("D-X", markers={**CLEAN, Marker.SYPHILIS: MarkerResult.REACTIVE})
    with pytest.raises(RuleViolation) as refused:
        lab.cord(ineligible)
    assert "ineligible" in refused.value.reasons[0]
    assert count(db, Cord) == 1


def test_the_fills_critical_entries_are_verified_by_a_second_person(db, lab):
    batch = lab.filled(vials=2)
    fill = batch.fill
    assert services.unverified_entries(batch) == [fill] and fill.entry_label == "Fill"
    check = lab.check(lab.tech, SignatureMeaning.VERIFIED)
    with pytest.raises(RuleViolation):
        vial_services.verify_fill(lab.tech, fill, 10_000_000, Decimal("93"), check)
    with pytest.raises(RuleViolation) as refused:
        vial_services.verify_fill(lab.tech2, fill, 9_000_000, Decimal("93"), lab.check(lab.tech2, SignatureMeaning.VERIFIED))
    assert [f for f, _ in refused.value.problems] == ["viable_cells_per_vial"]
    vial_services.verify_fill(lab.tech2, fill, 10_000_000, Decimal("93.00"), lab.check(lab.tech2, SignatureMeaning.VERIFIED))
    assert services.unverified_entries(batch) == [] and fill.verified_by_id == lab.tech2.id
    assert db.session.scalars(select(Signature).where(Signature.entity_type == "fills")).one().user_id == lab.tech2.id
