"""Demo data: a lot made, tested, released and selected for the trial; the proposed vials
allocated to a cell-arm patient's open order, thawed, dispensed with a witness and administered
at the bedside, so the pharmacy shows a completed dispensing with its certificate.

The demo has no potency feature, so the lot's approved potency run is supplied to the release
decision by this loader only (a demo run reference, ``PR-DEMO-CUS``). Idempotent: a second run
changes nothing."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import current_app, has_request_context
from sqlalchemy import select

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.batches import services as batch_services
from labsys.batches.models import Batch, Donor, Reagent
from labsys.batches.rules import Marker, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.chain_of_custody import services
from labsys.chain_of_custody.models import Dispensing
from labsys.db import utcnow
from labsys.extensions import db
from labsys.timefmt import lab_today

DONOR_CODE = "D-DEMO-CUS"
DEMO_POTENCY = {"percent_inhibition": Decimal("41.5"), "run_valid": True, "run_reference": "PR-DEMO-CUS"}
RESULTS = {"APPEARANCE": ("conforms", None), "VIABLE_CELLS": ("10.0", "x10^6 cells/vial"),
           "VIABILITY": ("93.0", "%"), "STERILITY": ("no growth", None), "MYCOPLASMA": ("negative", None),
           "ENDOTOXIN": ("0.08", "EU/mL"), "KARYOTYPE": ("normal", None)}


def load_demo_data() -> None:
    if not has_request_context():
        with current_app.test_request_context():
            return _load()
    return _load()


def _load() -> None:
    if db.session.scalar(select(Dispensing.id).limit(1)) is not None:
        return
    names = ("technician", "technician2", "qa", "qa2", "pharmacist", "pharmacist2", "investigator")
    users = {name: find_user(name) for name in names}
    from labsys.release import specs
    from labsys.trial.services import get_trial

    if None in users.values() or get_trial() is None or specs.find_specification() is None:
        return
    batch = _released_lot(users)
    patient, order = _cell_arm_order(users)
    if batch is None or order is None:
        return
    proposal = services.propose_vials(order)
    if not proposal.vials:
        return
    services.allocate(users["pharmacist"], order, [v.identifier for v in proposal.vials])
    # The allocated vials travel from the GMP lab to the pharmacy in a dry shipper.
    from labsys.chain_of_custody import shipping

    shipment = shipping.ship(users["technician"], [v.identifier for v in proposal.vials],
                             "Hospital cold-chain courier (dry shipper DS-3)", "Pharmacy, clean room 2",
                             Decimal("-196"), Decimal("-150"))
    start = utcnow() - dt.timedelta(minutes=50)
    shipping.record_readings(users["technician"], shipment, [
        (start + dt.timedelta(minutes=10 * i), Decimal(reading))
        for i, reading in enumerate(("-188.5", "-187.9", "-186.2", "-185.8", "-185.1"))])
    shipping.receive(users["pharmacist"], shipment, [services.vial_payload(v) for v in proposal.vials])
    for vial in proposal.vials:
        services.thaw(users["pharmacist"], vial, Decimal("37.0"), "water bath WB-02")
    dispensing = services.dispense(
        users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, "demo data"),
        SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, "demo data"),
        services.patient_payload(patient), [services.vial_payload(v) for v in proposal.vials])
    now = utcnow().replace(second=0, microsecond=0)
    services.administer(users["investigator"], dispensing,
                        SignatureCheck(users["investigator"], SignatureMeaning.ADMINISTERED, "demo data"),
                        services.patient_payload(patient), [services.vial_payload(v) for v in proposal.vials],
                        now, now)


def _released_lot(users) -> Batch | None:
    from labsys.batches.demo import _run_batch
    from labsys.release import decisions, results
    from labsys.release.defaults import NEGATIVE_MARKERS, POSITIVE_MARKERS
    from labsys.release.selection import select_for_trial

    if db.session.scalar(select(Donor.id).where(Donor.code == DONOR_CODE)):
        return None
    tech, tech2, qa, qa2 = users["technician"], users["technician2"], users["qa"], users["qa2"]
    today = lab_today()
    reagent_ids = list(db.session.scalars(select(Reagent.id).where(
        Reagent.status == ReagentStatus.RELEASED, Reagent.expiry_date > today, Reagent.item != "CryoStor CS10")))
    donor = batch_services.register_donor(tech, DONOR_CODE, today - dt.timedelta(days=70), ScreeningOutcome.ACCEPTABLE,
                                          today - dt.timedelta(days=41), {m: MarkerResult.NON_REACTIVE for m in Marker})
    batch_services.determine_eligibility(qa2, donor, SignatureCheck(qa2, SignatureMeaning.APPROVED, "demo data"))
    batch = _run_batch(tech, tech2, qa2, donor, 40, 3, True, reagent_ids)
    values = {**RESULTS, **{m: ("98.9", "%") for m in POSITIVE_MARKERS}, **{m: ("0.5", "%") for m in NEGATIVE_MARKERS}}
    entered = [results.enter_result(tech, batch, results.ResultInput(code, value, unit, "Demo Analyst", today,
                                                                     instrument="DEMO-INST"))
               for code, (value, unit) in values.items()]
    for result in entered:
        results.verify_result(tech2, result)
    key = "labsys_release_potency"
    previous = current_app.extensions.get(key)
    current_app.extensions[key] = lambda lot: DEMO_POTENCY if lot == batch.identifier else (
        previous(lot) if previous else None)
    try:
        decisions.decide_lot(qa, batch, True, SignatureCheck(qa, SignatureMeaning.RELEASED, "demo data"),
                             "meets specification", None)
    finally:
        if previous is None:
            current_app.extensions.pop(key, None)
        else:
            current_app.extensions[key] = previous
    select_for_trial(qa, batch, SignatureCheck(qa, SignatureMeaning.APPROVED, "demo data: supplies the trial"))
    return batch


def _cell_arm_order(users):
    from labsys.trial import orders
    from labsys.trial.models import OrderStatus, Patient
    from labsys.trial.rules import ARM_MSC
    from labsys.trial.services import arm_of

    patients = [p for p in db.session.scalars(select(Patient).order_by(Patient.id)) if p.randomized]
    for patient in patients:
        order = orders.active_order(patient)
        if arm_of(patient) == ARM_MSC and order is not None and order.status == OrderStatus.OPEN:
            return patient, order
    for patient in patients:
        if arm_of(patient) == ARM_MSC and orders.active_order(patient) is None:
            return patient, orders.order_infusion(users["investigator"], patient, lab_today())
    return None, None
