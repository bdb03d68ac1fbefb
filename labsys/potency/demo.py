"""Demo data: one scored, QA-approved BV2 run for the demo lots, built from synthetic fields
(24-well plate, 512×512 fields, a few seconds). Idempotent: a second run changes nothing."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
from flask import current_app
from sqlalchemy import select

from labsys.extensions import db

DEMO_LPS_LOT = "LPS-DEMO-0111"
DEMO_TEST_LOTS = ("W000026000001", "W000026000002")
DEMO_REFERENCE_LOT = "MSC-REF-2026-01"

# (row, condition, lot, ratio, true activation fraction), three replicate wells each.
DEMO_LAYOUT = [
    ("A", 1, "unstimulated", None, None, 0.15),
    ("A", 4, "lps", None, None, 0.70),
    ("B", 1, "test", DEMO_TEST_LOTS[0], "1:10", 0.35),
    ("B", 4, "test", DEMO_TEST_LOTS[1], "1:10", 0.45),
    ("C", 1, "reference", DEMO_REFERENCE_LOT, "1:10", 0.40),
]
FIELDS_PER_WELL = 2


def tiff_bytes(image: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    return buffer.getvalue()


def demo_field(fraction: float, seed: int) -> bytes:
    from labsys.potency.synthetic import synthetic_field

    field = synthetic_field(shape=(512, 512), cell_count=90, activation_fraction=fraction, seed=seed)
    return tiff_bytes(field.image)


def load_demo_data() -> None:
    """A 24-well run scoring two demo lots against the reference lot, scored and approved."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.services import find_user
    from labsys.auth.signatures import authenticate_signer
    from labsys.cli import demo_password
    from labsys.potency import jobs, services
    from labsys.potency.models import PotencyRun
    from labsys.potency.states import WellCondition

    if db.session.scalar(select(PotencyRun.id).where(PotencyRun.lps_lot == DEMO_LPS_LOT)) is not None:
        return
    technician, qa = find_user("technician"), find_user("qa")
    if technician is None or qa is None:
        return
    run = services.create_run(
        technician, assay_date=dt.date(2026, 11, 20), bv2_passage=12, lps_lot=DEMO_LPS_LOT, lps_ng_per_ml=100,
        test_lots=list(DEMO_TEST_LOTS), reference_lot=DEMO_REFERENCE_LOT, plate_format=24, min_cells_per_field=30,
        reference_min_inhibition=25, reference_max_inhibition=85, notes="Demo data (synthetic fields)")
    assignments = {}
    truth = {}
    for row, first_col, condition, lot, ratio, fraction in DEMO_LAYOUT:
        for col in range(first_col, first_col + 3):
            well = f"{row}{col:02d}"
            assignments[well] = services.WellAssignment(WellCondition(condition), lot, ratio)
            truth[well] = fraction
    services.save_layout(technician, run, assignments)
    files = []
    for index, (well, fraction) in enumerate(sorted(truth.items())):
        for field_number in range(1, FIELDS_PER_WELL + 1):
            files.append((f"{well}_f{field_number}.tif", demo_field(fraction, seed=1000 + 10 * index + field_number)))
    services.upload_images(technician, run, files)
    services.start_scoring(technician, run)
    jobs.score_run(run.id)
    db.session.expire_all()
    run = services.get_run(run.id)
    password = demo_password()
    services.review_run(authenticate_signer(qa, "qa", password, SignatureMeaning.REVIEWED, "Demo review"), run)
    if run.valid:
        services.approve_run(authenticate_signer(qa, "qa", password, SignatureMeaning.APPROVED, "Demo approval"), run)
    current_app.logger.info("potency demo run %s loaded (%s)", run.code, run.state.value)
