"""Custody services: events, allocation, thaw, witness re-authentication, dispensing."""
from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import select, text

from labsys.audit.models import AuditEntry
from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck, signatures_for
from labsys.batches.states import VialStatus
from labsys.batches.vials import vials_of
from labsys.chain_of_custody import services
from labsys.chain_of_custody.models import AllocationStatus, CustodyEventType
from labsys.errors import ConcurrentChange, RuleViolation, SignatureRefused
from labsys.trial import orders as trial_orders
from labsys.trial import rules as trial_rules
from labsys.trial.models import OrderStatus
from tests.conftest import DEMO_PASSWORD


def _ready(users, released_lot, patient_in_arm, thaw: bool = True):
    """A lot of 6 vials, an MSC patient (70 kg → 35e6 cells → 4 vials), allocated and thawed."""
    lot = released_lot()
    patient = patient_in_arm()
    order = trial_orders.active_order(patient)
    proposal = services.propose_vials(order)
    services.allocate(users["pharmacist"], order, [v.identifier for v in proposal.vials])
    if thaw:
        for vial in proposal.vials:
            services.thaw(users["pharmacist"], vial)
    return lot, patient, order, proposal.vials


def _checks(users):
    return (SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, None),
            SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, None))


def test_the_proposal_takes_released_selected_lots_first_expiry_first_with_the_fewest_vials(users, released_lot,
                                                                                              patient_in_arm):
    unselected = released_lot(select=False)
    selected = released_lot()
    patient = patient_in_arm()
    order = trial_orders.active_order(patient)
    proposal = services.propose_vials(order)
    assert proposal.lot.id == selected.id != unselected.id
    assert proposal.vials_needed == 4 == len(proposal.vials)  # 35e6 target ÷ 10e6 a vial
    assert [v.expiry_date for v in proposal.vials] == sorted(v.expiry_date for v in proposal.vials)
    assert all(VialStatus(v.status) == VialStatus.AVAILABLE for v in proposal.vials)



def test_the_check_reads_patient_and_vials_in_one_statement_as_the_two_reads_would(users, released_lot,
                                                                                  patient_in_arm):
    """dispensing_scans (one statement for the dispense check) answers what dispensing_patient and
    vial_facts (a scan's read of one vial) answer apart: patient found or not, no kit read, every
    vial, some or none found, and a vial named twice or in lower case."""
    from labsys.trial.services import dispensing_patient

    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm)
    other = released_lot()
    thawed = [v.identifier for v in vials]
    available = [v.identifier for v in vials_of(other)[:2]]
    unknown = "W0000-99-999999-99"
    cases = [(patient.kit_number, thawed), (patient.kit_number, thawed[:1] + available + [unknown]),
             (patient.kit_number, [unknown]), (patient.kit_number, []), ("K-999999", thawed[:2]),
             ("K-999999", [unknown]), (None, available), (None, []),
             (patient.kit_number, [thawed[0].lower(), thawed[0]])]
    for kit, identifiers in cases:
        found, facts = services.dispensing_scans(kit, identifiers)
        assert found == (dispensing_patient(kit) if kit else None), (kit, identifiers)
        apart = {identifier: services.vial_facts(identifier) for identifier in identifiers}
        assert facts == {i.upper(): f for i, f in apart.items() if f is not None}, (kit, identifiers)
    found, facts = services.dispensing_scans(patient.kit_number, thawed[:1] + available + [unknown])
    assert found.id == patient.id and found.order_id == order.id and found.arm == trial_rules.ARM_MSC
    assert set(facts) == {thawed[0], *available}
    assert facts[thawed[0]].allocated_kit == patient.kit_number and facts[thawed[0]].thawed_at is not None
    assert facts[available[0]].allocated_kit is None and facts[available[0]].vial.status == VialStatus.AVAILABLE


def test_allocation_moves_vials_to_allocated_with_a_custody_event_and_audit_entries(app, db, users, released_lot,
                                                                                    patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm, thaw=False)
    for vial in vials:
        db.session.refresh(vial)
        assert VialStatus(vial.status) == VialStatus.ALLOCATED
        events = services.timeline(vial)
        assert events[-1].event_type == "allocated" and events[-1].order_id == order.id
        assert patient.kit_number in events[-1].note
    allocations = services.active_allocations(order)
    assert {a.vial_id for a in allocations} == {v.id for v in vials}
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "custody.allocate",
                                                          AuditEntry.entity_type == "vials")).all()
    assert len(entries) == 4
    assert all(json.loads(e.old_values)["status"] == "available" and json.loads(e.new_values)["status"] == "allocated"
               for e in entries)


def test_cancelling_an_allocation_returns_the_vials_to_available(app, db, users, released_lot, patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm, thaw=False)
    with pytest.raises(RuleViolation):
        services.cancel_allocation(users["pharmacist"], order, "  ")
    services.cancel_allocation(users["pharmacist"], order, "infusion postponed")
    for vial in vials:
        db.session.refresh(vial)
        assert VialStatus(vial.status) == VialStatus.AVAILABLE
        assert services.timeline(vial)[-1].event_type == "returned"
    assert not services.active_allocations(order)
    assert {a.status for a in services.allocations_of(order)} == {AllocationStatus.CANCELLED}


def test_allocation_refuses_unavailable_unselected_or_too_few_vials_and_writes_nothing(app, db, users, released_lot,
                                                                                      patient_in_arm):
    unselected = released_lot(select=False)
    selected = released_lot()
    patient = patient_in_arm()
    order = trial_orders.active_order(patient)
    before = db.session.scalar(select(db.func.count(AuditEntry.seq)))
    with pytest.raises(RuleViolation) as refused:
        services.allocate(users["pharmacist"], order, [v.identifier for v in vials_of(unselected)][:4])
    assert any("not released and selected" in r for r in refused.value.reasons)
    with pytest.raises(RuleViolation) as refused:
        services.allocate(users["pharmacist"], order, [v.identifier for v in vials_of(selected)][:1])
    assert refused.value.reasons
    assert db.session.scalar(select(db.func.count(AuditEntry.seq))) == before
    assert all(VialStatus(v.status) == VialStatus.AVAILABLE for v in vials_of(selected))


def test_control_arm_patients_get_no_vials(app, users, released_lot, patient_in_arm):
    released_lot()
    patient = patient_in_arm(trial_rules.ARM_CONTROL)
    order = trial_orders.active_order(patient)
    with pytest.raises(RuleViolation):
        services.allocate(users["pharmacist"], order, ["W000026000001A001"])


def test_thaw_sets_the_use_by_from_the_configured_hold_time(app, db, users, released_lot, patient_in_arm):
    app.config["THAW_HOLD_MINUTES"] = 45
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm)
    vial = vials[0]
    db.session.refresh(vial)
    assert VialStatus(vial.status) == VialStatus.THAWED
    thawed = services.thawed_at(vial)
    assert services.use_by(vial) - thawed == dt.timedelta(minutes=45)
    with pytest.raises(Exception):
        services.thaw(users["pharmacist"], vial)  # already thawed


def test_custody_events_are_append_only_in_the_database(app, db, users, released_lot, patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm, thaw=False)
    event_id = services.timeline(vials[0])[-1].id
    for statement in (f"UPDATE vial_events SET note = 'x' WHERE id = {event_id}",
                      f"DELETE FROM vial_events WHERE id = {event_id}"):
        with pytest.raises(Exception):
            with db.engine.begin() as connection:
                connection.execute(text(statement))


def test_a_witnessed_dispensing_moves_every_vial_signs_twice_and_prepares_the_order(app, db, users, released_lot,
                                                                                   patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm)
    dispenser, witness = _checks(users)
    dispensing = services.dispense(users["pharmacist"], dispenser, witness, services.patient_payload(patient),
                                   [services.vial_payload(v) for v in vials])
    assert dispensing.vial_list == [v.identifier for v in vials]
    for vial in vials:
        db.session.refresh(vial)
        assert VialStatus(vial.status) == VialStatus.DISPENSED
        last = services.timeline(vial)[-1]
        assert last.event_type == "dispensed" and last.witness_id == users["pharmacist2"].id
    meanings = {(s.user_id, SignatureMeaning(s.meaning)) for s in signatures_for(dispensing)}
    assert meanings == {(users["pharmacist"].id, SignatureMeaning.DISPENSED),
                        (users["pharmacist2"].id, SignatureMeaning.WITNESSED)}
    db.session.refresh(order)
    assert order.status == OrderStatus.PREPARED
    assert trial_orders.preparation_of(order).vial_identifiers == dispensing.vial_list
    assert len(dispensing.chain_head_hash) == 64


def test_a_refused_dispensing_writes_nothing_but_an_audit_entry_with_every_reason(app, db, users, released_lot,
                                                                                  patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm)
    dispenser, witness = _checks(users)
    with pytest.raises(RuleViolation) as refused:
        services.dispense(users["pharmacist"], dispenser, witness, services.patient_payload(patient),
                          [services.vial_payload(v) for v in vials[:1]])  # one vial: under-dose
    assert any("dose" in r.lower() or "target" in r for r in refused.value.reasons)
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "custody.dispense_refused")).one()
    details = json.loads(entry.new_values)
    assert details["failed"] and details["kit_number"] == patient.kit_number
    db.session.refresh(vials[0])
    assert VialStatus(vials[0].status) == VialStatus.THAWED


def test_the_witness_authenticates_with_their_own_credentials_not_the_dispensers(app, users):
    pharmacist = users["pharmacist"]
    check = services.authenticate_witness(pharmacist, "pharmacist2", DEMO_PASSWORD)
    assert check.signer.id == users["pharmacist2"].id and check.meaning == SignatureMeaning.WITNESSED
    with pytest.raises(SignatureRefused):
        services.authenticate_witness(pharmacist, "pharmacist", DEMO_PASSWORD)  # the dispenser himself
    with pytest.raises(SignatureRefused):
        services.authenticate_witness(pharmacist, "pharmacist2", "wrong password")
    with pytest.raises(SignatureRefused):
        services.authenticate_witness(pharmacist, "admin", DEMO_PASSWORD)  # admin cannot sign
    with pytest.raises(SignatureRefused):
        services.authenticate_witness(pharmacist, "nobody", DEMO_PASSWORD)


def test_two_pharmacists_dispensing_the_same_vials_at_once_dispense_them_exactly_once(app, db, users, released_lot,
                                                                                       patient_in_arm):
    lot, patient, order, vials = _ready(users, released_lot, patient_in_arm)
    patient_code = services.patient_payload(patient)
    vial_codes = [services.vial_payload(v) for v in vials]
    user_ids = {"pharmacist": (users["pharmacist"].id, users["qa"].id),
                "pharmacist2": (users["pharmacist2"].id, users["qa2"].id)}
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(name: str):
        from labsys.extensions import db as _db
        from labsys.auth.models import User

        with app.app_context():
            dispenser_id, witness_id = user_ids[name]
            dispenser, witness = _db.session.get(User, dispenser_id), _db.session.get(User, witness_id)
            barrier.wait()
            try:
                services.dispense(dispenser, SignatureCheck(dispenser, SignatureMeaning.DISPENSED, None),
                                  SignatureCheck(witness, SignatureMeaning.WITNESSED, None), patient_code, vial_codes)
                outcomes[name] = "dispensed"
            except (ConcurrentChange, RuleViolation) as error:
                outcomes[name] = type(error).__name__
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=run, args=(name,)) for name in user_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes.values()).count("dispensed") == 1, outcomes
    db.session.rollback()
    for vial in vials:
        events = [e for e in services.timeline(vial) if e.event_type == CustodyEventType.DISPENSED.value]
        assert len(events) == 1
    assert len(services.dispensings()) == 1
