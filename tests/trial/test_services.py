"""Trial services on both database legs: configuration, enrolment, the sealed list,
randomization (with concurrency proofs), unblinding, orders and follow-up."""
from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from labsys.audit.models import AuditEntry
from labsys.audit.services import verify_chain
from labsys.auth.models import SignatureMeaning, User
from labsys.auth.signatures import SignatureCheck, signatures_for
from labsys.errors import ConcurrentChange, Forbidden, RuleViolation
from labsys.extensions import db as _db
from labsys.trial import followup, orders, services
from labsys.trial.masking import arm_label_for, may_see_arm
from labsys.trial.models import AllocationEntry, EligibilityStatus, OrderStatus, Patient

from .conftest import ARM_NAMES, screening_values
from tests.conftest import lab_today


def test_a_second_trial_or_a_masked_user_cannot_configure(db, make_trial, investigator, pharmacist):
    trial = make_trial(generate=False)
    with pytest.raises(Forbidden):
        services.save_trial(investigator, {})
    with pytest.raises(RuleViolation):
        services.save_trial(pharmacist, {"registry_number": "X", "control_arm_name": "a", "msc_arm_name": "b",
                                         "ratio_control": 1, "ratio_msc": 1, "block_sizes": "2,4",
                                         "target_enrolment": 40, "age_min": 18, "age_max": 75,
                                         "dose_cells_per_kg": 1, "dose_tolerance": Decimal("0.2"),
                                         "max_dose_cells": None, "follow_up_days": 90, "visit_days": "1,90",
                                         "exclusions": [], "title": "x", "masked": True,
                                         "apply_post_thaw_viability": True, "endotoxin_limit_eu_per_kg": 5})
    assert trial.target_enrolment == 40 and trial.exclusions


def test_arms_and_blocks_freeze_once_the_list_exists(db, trial, pharmacist):
    values = {name: getattr(trial, name) for name in services.TRIAL_FIELDS if name != "exclusions"}
    values["exclusions"] = trial.exclusions
    values["block_sizes"] = "4,6"
    with pytest.raises(RuleViolation) as refused:
        services.save_trial(pharmacist, values, trial)
    assert "block_sizes" in refused.value.field_problems


def test_the_list_is_balanced_sealed_and_generated_only_once(db, trial, pharmacist):
    lines = services.unsealed_list(pharmacist, trial)
    assert len(lines) >= 40
    counts = Counter(arm for _entry, arm in lines)
    assert counts["msc"] == counts["control"]
    raw = db.session.execute(text("SELECT arm_sealed FROM trial_allocation_entries")).scalars().all()
    assert all("msc" not in value and "control" not in value for value in raw)
    with pytest.raises(RuleViolation):
        services.generate_allocation_list(pharmacist, trial)


def test_masked_users_cannot_read_or_export_the_list(db, trial, investigator, demo_users):
    for user in (investigator, demo_users["qa"], demo_users["admin"]):
        with pytest.raises(Forbidden):
            services.unsealed_list(user, trial)
        with pytest.raises(Forbidden):
            services.export_allocation_csv(user, trial)


def test_exporting_the_list_is_audited(db, trial, pharmacist):
    body = services.export_allocation_csv(pharmacist, trial)
    assert body.splitlines()[0].startswith("sequence,block,block_size,arm")
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "trial.allocation_export"))
    assert entry is not None and entry.user_id == pharmacist.id


def test_a_sealed_arm_moved_to_another_line_does_not_open(db, trial, pharmacist):
    from labsys.trial.sealing import SealBroken, open_arm

    first, second = db.session.scalars(select(AllocationEntry).order_by(AllocationEntry.sequence).limit(2)).all()
    with pytest.raises(SealBroken):
        open_arm(trial.id, second.sequence, first.arm_sealed)


def test_an_opened_arm_is_remembered_per_key_and_a_bad_seal_still_fails(app, db, trial, pharmacist):
    """Arms opened once are remembered (a dispensing check opens one each time), but only for
    the key that opened them; a seal moved or altered after its line was opened still fails."""
    from cryptography.fernet import Fernet

    from labsys.trial import sealing
    from labsys.trial.sealing import SealBroken, open_arm

    first, second = db.session.scalars(select(AllocationEntry).order_by(AllocationEntry.sequence).limit(2)).all()
    arm = open_arm(trial.id, first.sequence, first.arm_sealed)
    assert arm in ("control", "msc")
    before = sealing._opened.cache_info().hits
    assert open_arm(trial.id, first.sequence, first.arm_sealed) == arm
    assert sealing._opened.cache_info().hits == before + 1
    with pytest.raises(SealBroken):
        open_arm(trial.id, second.sequence, first.arm_sealed)  # remembered, yet bound to its line
    altered = first.arm_sealed[:-6] + ("A" if first.arm_sealed[-6] != "A" else "B") + first.arm_sealed[-5:]
    for _ in range(2):
        with pytest.raises(SealBroken):
            open_arm(trial.id, first.sequence, altered)
    original = app.config.get("TRIAL_ALLOCATION_KEY")
    app.config["TRIAL_ALLOCATION_KEY"] = Fernet.generate_key()
    try:
        with pytest.raises(SealBroken):
            open_arm(trial.id, first.sequence, first.arm_sealed)  # another key: nothing remembered
    finally:
        app.config["TRIAL_ALLOCATION_KEY"] = original


@pytest.mark.parametrize("overrides, field", [
    ({"age_years": 17}, "age"), ({"age_years": 76}, "age"),
    ({"weight_kg": Decimal("0")}, "weight"), ({"weight_kg": Decimal("400")}, "weight"),
])
def test_out_of_range_age_or_weight_refuses_enrolment_and_writes_nothing(db, trial, enrol, overrides, field):
    before = db.session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    with pytest.raises(RuleViolation) as refused:
        enrol(trial, **overrides)
    assert field in refused.value.field
    assert db.session.scalar(select(Patient.id)) is None
    assert db.session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) == before


def test_unassessed_items_leave_eligibility_pending_and_block_randomization(db, trial, enrol, pharmacist, investigator):
    patient = enrol(trial, diagnosis_confirmed="")
    assert patient.eligibility == EligibilityStatus.PENDING
    with pytest.raises(RuleViolation) as refused:
        services.randomize_patient(pharmacist, patient)
    assert "not complete" in refused.value.reasons[0]
    services.update_screening(investigator, patient, screening_values(trial, "x"), reason=None)
    assert patient.eligibility == EligibilityStatus.ELIGIBLE
    assert services.randomize_patient(pharmacist, patient) in ("msc", "control")


def test_randomization_takes_lines_in_order_and_assigns_study_id_and_kit(db, trial, enrol, pharmacist):
    expected = [arm for _e, arm in services.unsealed_list(pharmacist, trial)]
    got = [services.randomize_patient(pharmacist, enrol(trial)) for _ in range(6)]
    assert got == expected[:6]
    patients = services.patients(trial)
    assert [p.study_id for p in patients] == [f"P-{n:03d}" for n in range(1, 7)]
    kits = [p.kit_number for p in patients]
    assert len(set(kits)) == 6 and all(k.startswith("K-") and len(k) == 8 for k in kits)


def test_a_patient_cannot_be_randomized_twice(db, trial, enrol, pharmacist):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    with pytest.raises(RuleViolation) as refused:
        services.randomize_patient(pharmacist, patient)
    assert "already randomized" in refused.value.reasons[0]


def test_only_the_unblinded_role_randomizes(db, trial, enrol, investigator):
    with pytest.raises(Forbidden):
        services.randomize_patient(investigator, enrol(trial))


def test_enrolment_stops_at_the_target(db, make_trial, enrol, pharmacist):
    trial = make_trial(target_enrolment=2, block_sizes="4")
    waiting = enrol(trial)  # screened before the target was reached: randomization still refuses
    for _ in range(2):
        services.randomize_patient(pharmacist, enrol(trial))
    with pytest.raises(RuleViolation) as refused:
        enrol(trial)
    assert "Enrolment is complete" in refused.value.message
    with pytest.raises(RuleViolation) as refused:
        services.randomize_patient(pharmacist, waiting)
    assert "Enrolment is complete" in refused.value.message


def test_randomization_is_audited_without_the_arm(db, trial, enrol, pharmacist):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "trial.randomize")).all()
    assert any(e.entity_type == "trial_allocation_entries" and json.loads(e.new_values)["study_id"] == "P-001"
               for e in entries)
    everything = " ".join((e.new_values or "") + (e.old_values or "") for e in db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity_type != "trials")))
    assert '"msc"' not in everything and '"control"' not in everything
    assert not any(name in everything for name in ARM_NAMES)
    assert verify_chain(db.session).ok


def _run_in_threads(app, work, count):
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index):
        with app.app_context():
            try:
                barrier.wait()
                results[index] = work(index)
            except Exception as error:  # collected and asserted by the test
                results[index] = error
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_randomizations_never_take_the_same_line(app, db, trial, enrol, pharmacist):
    patient_ids = [enrol(trial).id for _ in range(10)]
    pharmacist_id, trial_id = pharmacist.id, trial.id
    db.session.remove()

    def work(index):
        user = _db.session.get(User, pharmacist_id)
        return services.randomize_patient(user, _db.session.get(Patient, patient_ids[index]))

    results = _run_in_threads(app, work, 10)
    assert not [r for r in results if isinstance(r, Exception)], results
    used = db.session.execute(select(AllocationEntry.sequence, AllocationEntry.used_by_patient_id)
                              .where(AllocationEntry.trial_id == trial_id,
                                     AllocationEntry.used_by_patient_id.is_not(None))).all()
    assert sorted(seq for seq, _p in used) == list(range(1, 11))
    assert sorted(p for _s, p in used) == sorted(patient_ids)
    assert len({p.kit_number for p in services.patients(services.get_trial())}) == 10
    assert verify_chain(db.session).ok


def test_the_same_patient_randomized_at_once_gets_one_line_only(app, db, trial, enrol, pharmacist):
    patient_id, pharmacist_id = enrol(trial).id, pharmacist.id
    db.session.remove()

    def work(_index):
        user = _db.session.get(User, pharmacist_id)
        return services.randomize_patient(user, _db.session.get(Patient, patient_id))

    results = _run_in_threads(app, work, 4)
    assert sum(1 for r in results if isinstance(r, str)) == 1
    assert all(isinstance(r, (RuleViolation, ConcurrentChange)) for r in results if not isinstance(r, str)), results
    assert db.session.scalar(select(AllocationEntry.sequence).where(
        AllocationEntry.used_by_patient_id.is_not(None))) == 1
    assert len(db.session.scalars(select(AllocationEntry.id).where(
        AllocationEntry.used_by_patient_id.is_not(None))).all()) == 1


def test_concurrent_randomizations_stop_exactly_at_the_target(app, db, make_trial, enrol, pharmacist):
    trial = make_trial(target_enrolment=3, block_sizes="2")
    patient_ids = [enrol(trial).id for _ in range(6)]
    pharmacist_id = pharmacist.id
    db.session.remove()

    def work(index):
        user = _db.session.get(User, pharmacist_id)
        return services.randomize_patient(user, _db.session.get(Patient, patient_ids[index]))

    results = _run_in_threads(app, work, 6)
    assert sum(1 for r in results if isinstance(r, str)) == 3
    assert all("Enrolment is complete" in r.message for r in results if isinstance(r, RuleViolation))


def test_masking_helpers_show_arms_to_unblinded_users_only(db, trial, enrol, pharmacist, investigator, demo_users):
    patient = enrol(trial)
    arm = services.randomize_patient(pharmacist, patient)
    assert may_see_arm(pharmacist) and not may_see_arm(investigator) and not may_see_arm(demo_users["qa"])
    assert arm_label_for(investigator, patient) == f"Kit {patient.kit_number}"
    assert arm_label_for(pharmacist, patient) == ARM_NAMES[1 if arm == "msc" else 0]
    with pytest.raises(Forbidden):
        services.arm_for(investigator, patient)


def test_without_masking_everyone_sees_the_arm(db, make_trial, enrol, pharmacist, investigator):
    trial = make_trial(masked=False)
    patient = enrol(trial)
    arm = services.randomize_patient(pharmacist, patient)
    assert arm_label_for(investigator, patient) == ARM_NAMES[1 if arm == "msc" else 0]


def test_emergency_unblinding_is_signed_reasoned_and_audited(db, trial, enrol, pharmacist, investigator):
    patient = enrol(trial)
    arm = services.randomize_patient(pharmacist, patient)
    check = SignatureCheck(investigator, SignatureMeaning.AUTHORED, None)
    with pytest.raises(RuleViolation):
        services.emergency_unblind(investigator, patient, "  ", check)
    unblinding, shown = services.emergency_unblind(investigator, patient, "Suspected anaphylaxis", check)
    assert shown == ARM_NAMES[1 if arm == "msc" else 0]
    assert signatures_for(unblinding)[0].user_id == investigator.id
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "trial.emergency_unblind",
                                                       AuditEntry.entity_type == "trial_unblindings"))
    assert entry.reason == "Suspected anaphylaxis" and shown not in entry.new_values
    assert services.unblindings()[0].patient_id == patient.id


def _randomized_in(trial, enrol, pharmacist, wanted):
    for _ in range(12):
        patient = enrol(trial)
        if services.randomize_patient(pharmacist, patient) == wanted:
            return patient
    raise AssertionError("no patient in the wanted arm")


def test_an_order_for_a_control_patient_is_refused_without_masking(db, make_trial, enrol, pharmacist, investigator):
    trial = make_trial(masked=False)
    patient = _randomized_in(trial, enrol, pharmacist, "control")
    with pytest.raises(RuleViolation) as refused:
        orders.order_infusion(investigator, patient, lab_today())
    assert "routine-care arm" in refused.value.reasons[0]


def test_orders_need_a_randomized_patient_and_are_one_per_patient(db, trial, enrol, pharmacist, investigator):
    with pytest.raises(RuleViolation):
        orders.order_infusion(investigator, enrol(trial), lab_today())
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    order = orders.order_infusion(investigator, patient, lab_today())
    assert order.target_cells == 70_000_000 and orders.open_orders() == [order]
    with pytest.raises(RuleViolation):
        orders.order_infusion(investigator, patient, lab_today())


def test_cell_preparation_checks_dose_and_endotoxin_then_links_aes_to_the_lot(db, trial, enrol, pharmacist, investigator):
    patient = _randomized_in(trial, enrol, pharmacist, "msc")
    order = orders.order_infusion(investigator, patient, lab_today())
    sign_dispensed = SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, None)
    with pytest.raises(RuleViolation) as refused:  # 4 × 20e6 = 80e6 for a 70e6 target is fine, 30e6 vials are not
        orders.prepare_cells(pharmacist, order, lot_identifier="LOT1", vial_identifiers=["V1", "V2", "V3"],
                             viable_cells_per_vial=30_000_000, post_thaw_viability=None,
                             endotoxin_eu_per_ml=Decimal("4"), volume_ml=Decimal("100"), check=sign_dispensed)
    reasons = " ".join(refused.value.reasons)
    assert "outside the allowed" in reasons and "EU/kg is above" in reasons
    assert order.status == OrderStatus.OPEN
    orders.prepare_cells(pharmacist, order, lot_identifier="LOT1", vial_identifiers=["V1", "V2", "V3", "V4"],
                         viable_cells_per_vial=20_000_000, post_thaw_viability=None,
                         endotoxin_eu_per_ml=Decimal("0.5"), volume_ml=Decimal("100"), check=sign_dispensed)
    preparation = orders.preparation_of(order)
    assert preparation.delivered_cells == 80_000_000 and preparation.dose_ratio == Decimal("1.143")
    assert orders.preparation_for(investigator, order) is None and orders.preparation_for(pharmacist, order) == preparation
    orders.record_administration(investigator, order, dt.datetime.now(dt.timezone.utc),
                                 SignatureCheck(investigator, SignatureMeaning.ADMINISTERED, None))
    event = followup.report_adverse_event(investigator, patient, term="Fever", onset_date=lab_today(),
                                          severity="mild", serious=False, relatedness="possible")
    assert followup.product_link(event) == ("LOT1", ["V1", "V2", "V3", "V4"])
    assert followup.product_link_for(investigator, event) is None
    assert followup.aes_for_lot("LOT1") == [event] and followup.aes_for_lot("LOT2") == []


def test_a_control_patient_under_masking_gets_the_matching_placebo(db, trial, enrol, pharmacist, investigator):
    patient = _randomized_in(trial, enrol, pharmacist, "control")
    order = orders.order_infusion(investigator, patient, lab_today())
    check = SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, None)
    with pytest.raises(RuleViolation):
        orders.prepare_cells(pharmacist, order, lot_identifier="LOT1", vial_identifiers=["V1", "V2", "V3", "V4"],
                             viable_cells_per_vial=20_000_000, post_thaw_viability=None,
                             endotoxin_eu_per_ml=Decimal("0.5"), volume_ml=Decimal("100"), check=check)
    orders.prepare_placebo(pharmacist, order, placebo_identifier="PL-1", volume_ml=Decimal("100"), check=check)
    assert order.status == OrderStatus.PREPARED and orders.preparation_of(order).kind == "placebo"
    assert services.dispensing_arm_check(patient, patient.kit_number).passed
    assert not services.dispensing_arm_check(patient, "K-000000").passed


def test_visits_outcomes_and_the_summary(db, trial, enrol, pharmacist, investigator):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    followup.record_visit(investigator, patient, 1, "done", lab_today(), {"crp_mg_l": Decimal("80")})
    with pytest.raises(RuleViolation):  # a correction needs a reason
        followup.record_visit(investigator, patient, 1, "done", lab_today(), {"crp_mg_l": Decimal("81")})
    followup.record_visit(investigator, patient, 1, "done", lab_today(), {"crp_mg_l": Decimal("81")},
                          reason="transcription error")
    with pytest.raises(RuleViolation):
        followup.record_visit(investigator, patient, 1, "done", lab_today(), {"pao2_fio2_mmhg": Decimal("5")},
                              reason="x")
    followup.record_outcome(investigator, patient, admission_date=dt.date(2026, 1, 1),
                            discharge_date=dt.date(2026, 1, 11), vital_status="alive", death_date=None)
    assert patient.length_of_stay_days == 10
    masked = followup.summary(investigator, trial)
    assert masked["balance"] is None and masked["groups"] == ["all"]
    crp = next(e for e in masked["endpoints"] if e["name"] == "crp_mg_l")
    assert crp["rows"][0]["groups"]["all"] == {"n": 1, "median": Decimal("81.00")}
    assert "<svg" in crp["svg"] and not any(name in crp["svg"] for name in ARM_NAMES)
    unblinded = followup.summary(pharmacist, trial)
    assert sum(unblinded["balance"].values()) == 1
    csv_masked = followup.summary_csv(investigator, trial)
    header, first = csv_masked.splitlines()[:2]
    assert header.startswith("study_id,kit_number,arm") and first.split(",")[2] == ""
    assert followup.summary_csv(pharmacist, trial).splitlines()[1].split(",")[2] in ("msc", "control")


def test_overdue_visits_show_as_missed(db, trial, enrol, pharmacist):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    statuses = {v.study_day: v.status for v in followup.schedule(patient, today=lab_today() + dt.timedelta(days=20))}
    assert statuses[3] == "missed" and statuses[90] == "planned"
    followup.record_visit(investigator_of(patient), patient, 3, "missed", None, {})
    assert followup.schedule(patient)[1].status == "missed"  # recorded as missed, not only overdue
    with pytest.raises(RuleViolation) as refused:
        followup.record_visit(investigator_of(patient), patient, 7, "done", lab_today() - dt.timedelta(days=2), {})
    assert "before study day 1" in refused.value.reasons[0]


def investigator_of(patient):
    return patient.enrolled_by


def test_changing_an_answered_screening_item_needs_a_reason(db, trial, enrol, investigator):
    patient = enrol(trial, diagnosis_confirmed="")
    services.update_screening(investigator, patient, screening_values(trial, "x"), reason=None)  # completing
    assert patient.eligibility == EligibilityStatus.ELIGIBLE and patient.age_years == 45
    with pytest.raises(RuleViolation) as refused:
        services.update_screening(investigator, patient, screening_values(trial, "x", weight_kg=Decimal("71")), None)
    assert refused.value.field == "reason"
    services.update_screening(investigator, patient, screening_values(trial, "x", weight_kg=Decimal("71")),
                              "re-weighed on calibrated scale")
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "trial.screening_update")
                              .order_by(AuditEntry.seq.desc()).limit(1))
    assert entry.reason == "re-weighed on calibrated scale"
    assert json.loads(entry.old_values)["weight_kg"] == "70.0" and json.loads(entry.new_values)["weight_kg"] == "71"


def test_dispensing_dose_checks_report_every_rule(db, trial, enrol, pharmacist):
    patient = enrol(trial)
    results = orders.dispensing_dose_checks(patient, 90_000_000, Decimal("5"), Decimal("100"))
    assert {r.name: r.passed for r in results} == {"dose_tolerance": False, "dose_cap": True,
                                                    "endotoxin_per_kg": False}


def test_cancelling_an_order_needs_a_reason_and_frees_the_patient_for_a_new_order(db, trial, enrol, pharmacist, investigator):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    order = orders.order_infusion(investigator, patient, lab_today())
    with pytest.raises(RuleViolation):
        orders.cancel_order(investigator, order, "")
    orders.cancel_order(investigator, order, "patient transferred to ICU, infusion postponed")
    assert order.status == OrderStatus.CANCELLED
    assert orders.order_infusion(investigator, patient, lab_today()).status == OrderStatus.OPEN


def test_preparations_and_ae_links_look_alike_in_both_arms_and_in_the_audit_trail(db, trial, enrol, pharmacist, investigator):
    """Cells and placebo leave sealed records of equal length; no audit value names either."""
    sealed = {}
    for arm in ("msc", "control"):
        patient = _randomized_in(trial, enrol, pharmacist, arm)
        order = orders.order_infusion(investigator, patient, lab_today())
        check = SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, None)
        if arm == "msc":
            orders.prepare_cells(pharmacist, order, lot_identifier="LOT-SECRET",
                                 vial_identifiers=[f"VIAL-SECRET-{n}" for n in range(4)],
                                 viable_cells_per_vial=20_000_000, post_thaw_viability=None,
                                 endotoxin_eu_per_ml=Decimal("0.5"), volume_ml=Decimal("100"), check=check)
        else:
            orders.prepare_placebo(pharmacist, order, placebo_identifier="PL-SECRET", volume_ml=Decimal("100"), check=check)
        orders.record_administration(investigator, order, dt.datetime.now(dt.timezone.utc),
                                     SignatureCheck(investigator, SignatureMeaning.ADMINISTERED, None))
        event = followup.report_adverse_event(investigator, patient, term="Headache", onset_date=lab_today(),
                                              severity="mild", serious=False, relatedness="unlikely")
        sealed[arm] = (len(order.preparation_sealed), len(event.product_link_sealed))
    assert sealed["msc"] == sealed["control"]
    trail = " ".join((e.new_values or "") + (e.old_values or "") for e in db.session.scalars(select(AuditEntry)))
    for secret in ("LOT-SECRET", "PL-SECRET", "VIAL-SECRET", "placebo", '"cells"', *ARM_NAMES):
        assert secret not in trail


def test_the_custody_interface_finds_patients_by_study_id_or_kit(db, trial, enrol, pharmacist):
    from labsys.trial import interface

    patient = enrol(trial)
    assert interface.find_patient(study_id="P-001") is None
    services.randomize_patient(pharmacist, patient)
    assert interface.find_patient(study_id="P-001") is patient
    assert interface.find_patient(kit_number=patient.kit_number.lower()) is patient
    assert interface.dispensing_arm_check(patient, patient.kit_number).passed
    assert set(interface.__all__) <= set(dir(interface))
