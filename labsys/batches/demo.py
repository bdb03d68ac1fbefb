"""Demo data: eligible, ineligible and pending donors, a batch in process, and a filled batch in
quarantine with stored vials. Idempotent: a second run changes nothing."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.batches import services, vials
from labsys.batches.models import Donor, Inspection, StepType, TissueMethod
from labsys.batches.rules import Marker, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.db import utcnow
from labsys.extensions import db
from labsys.timefmt import lab_today

CLEAN = {m: MarkerResult.NON_REACTIVE for m in Marker}


def _run_batch(tech, tech2, qa, donor, days_ago: int, passages: int, fill: bool, reagent_ids: list[int]):
    now = utcnow().replace(second=0, microsecond=0)
    collected = now - dt.timedelta(days=days_ago, hours=10)
    cord = services.receive_cord(tech, donor, collected, collected + dt.timedelta(hours=6), Decimal("4.5"),
                                 Decimal("38.5"), Inspection.CONFORMS, None, "caesarean", 39)
    batch = services.start_batch(tech, cord)
    start = cord.received_at + dt.timedelta(hours=1)
    services.record_step(tech, batch, StepType.TISSUE_PROCESSING, start, start + dt.timedelta(hours=2),
                         "BSC-02, CO2-INC-01", reagent_ids, TissueMethod.EXPLANT)
    cells = 4_000_000
    for number in range(passages + 1):
        begin = start + dt.timedelta(days=1 if number == 0 else 11 + 4 * (number - 1))
        seeded = None if number == 0 else cells
        harvested = cells if number == 0 else seeded * 6  # type: ignore[operator]
        passage = services.record_passage(
            tech, batch, number, begin, begin + dt.timedelta(days=3 if number else 10), "BSC-02, CO2-INC-01",
            seeded, harvested, Decimal("94.5") - number, Decimal("85"), 2 + number * 2, reagent_ids)
        services.verify_passage(tech2, passage, passage.harvested_viable_cells, passage.viability_percent,
                                SignatureCheck(tech2, SignatureMeaning.VERIFIED, "demo data"))
        cells = harvested
    if fill:
        last = batch.passages[-1].step.ended_at
        vial_list = vials.fill_batch(tech, batch, 20, 10_000_000, Decimal("5.0"), "10% DMSO in CryoStor",
                                     Decimal("93.0"), last + dt.timedelta(hours=3), "BSC-02, FILL-01",
                                     last + dt.timedelta(hours=2), reagent_ids)
        vials.verify_fill(tech2, batch.fill, 10_000_000, Decimal("93.0"),
                          SignatureCheck(tech2, SignatureMeaning.VERIFIED, "demo data"))
        box = db.session.scalar(select(vials.Box).where(vials.Box.code == "BX-0001"))
        vials.store_vials_in_box(tech, vial_list, box)
    return batch


def load_demo_data() -> None:
    """Runs from the CLI (no request): a request context lets gettext pick a locale."""
    from flask import current_app, has_request_context

    if not has_request_context():
        with current_app.test_request_context():
            return _load()
    return _load()


def _load() -> None:
    if db.session.scalar(select(Donor.id).where(Donor.code == "D-DEMO-001")):
        return
    tech, tech2, qa = find_user("technician"), find_user("technician2"), find_user("qa")
    if tech is None or tech2 is None or qa is None:
        return
    today = lab_today()
    reagent_ids = []
    for item, lot, supplier, status, expiry in [
        ("MSC NutriStem XF medium", "NS-2611-04", "Sartorius", ReagentStatus.RELEASED, 200),
        ("TrypLE Select", "TL-2609-11", "Gibco", ReagentStatus.RELEASED, 150),
        ("DPBS without Ca/Mg", "PBS-2610-02", "Gibco", ReagentStatus.RELEASED, 300),
        ("CryoStor CS10", "CS10-2608-07", "BioLife", ReagentStatus.RELEASED, 250),
        ("Human platelet lysate", "HPL-2611-01", "Stemcell", ReagentStatus.QUARANTINE, 120),
        ("Collagenase NB6", "COL-2501-03", "Nordmark", ReagentStatus.RELEASED, -30),
    ]:
        reagent = services.add_reagent(tech, item, lot, supplier, today + dt.timedelta(days=expiry),
                                       today - dt.timedelta(days=60 if expiry > 0 else 400))
        if status != ReagentStatus.QUARANTINE:
            services.set_reagent_status(qa, reagent, status)
        if status == ReagentStatus.RELEASED and expiry > 0 and item != "CryoStor CS10":
            reagent_ids.append(reagent.id)
    tank = vials.create_tank(tech, "LN2-01", "Vapour-phase liquid nitrogen, GMP suite B")
    rack = vials.create_rack(tech, tank, "R01")
    vials.create_box(tech, rack, "BX-0001", 9, 9)
    qa_check = SignatureCheck(qa, SignatureMeaning.APPROVED, "demo data")

    def donor(code: str, days_ago: int, markers: dict, screening=ScreeningOutcome.ACCEPTABLE, determine=True):
        record = services.register_donor(tech, code, today - dt.timedelta(days=days_ago + 30), screening,
                                         today - dt.timedelta(days=days_ago + 1), markers)
        if determine:
            services.determine_eligibility(qa, record, qa_check)
        return record

    filled_donor = donor("D-DEMO-001", 30, CLEAN)
    running_donor = donor("D-DEMO-002", 18, CLEAN)
    donor("D-DEMO-003", 5, {**CLEAN, Marker.HBSAG: MarkerResult.REACTIVE})
    donor("D-DEMO-004", 2, {**CLEAN, Marker.HCV_NAT: MarkerResult.NOT_TESTED}, determine=False)
    _run_batch(tech, tech2, qa, filled_donor, 30, 3, True, reagent_ids)
    running = _run_batch(tech, tech2, qa, running_donor, 18, 1, False, reagent_ids)
    from labsys.batches.quality import raise_deviation

    raise_deviation(tech, "Incubator 3 CO2 alarm for 4 minutes during P1 (5.0 % → 4.1 %); flasks unaffected "
                          "on inspection.", batch=running)
