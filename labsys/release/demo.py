"""Demo data: the default specification (approved by QA, in force from a year ago), and QC
results for the demo lot in quarantine, entered by one technician and verified by another, so
QA finds a lot awaiting review. Idempotent: a second run changes nothing."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.batches.models import Batch
from labsys.batches.states import BatchStatus
from labsys.db import utcnow
from labsys.extensions import db
from labsys.release import results, specs
from labsys.release.defaults import NEGATIVE_MARKERS, POSITIVE_MARKERS
from labsys.timefmt import lab_today

DEMO_RESULTS = {"APPEARANCE": ("conforms", None), "VIABLE_CELLS": ("9.8", "x10^6 cells/vial"),
                "VIABILITY": ("93.0", "%"), "MYCOPLASMA": ("negative", None), "ENDOTOXIN": ("0.08", "EU/mL"),
                "KARYOTYPE": ("normal", None), **{m: ("98.7", "%") for m in POSITIVE_MARKERS},
                **{m: ("0.6", "%") for m in NEGATIVE_MARKERS}}


def load_demo_data() -> None:
    from flask import current_app, has_request_context

    if not has_request_context():
        with current_app.test_request_context():
            return _load()
    return _load()


def _load() -> None:
    qa, tech, tech2 = find_user("qa2"), find_user("technician"), find_user("technician2")
    if qa is None or tech is None or tech2 is None:
        return
    if specs.find_specification() is None:
        specs.install_default_specification(qa, utcnow() - dt.timedelta(days=365),
                                            SignatureCheck(qa, SignatureMeaning.APPROVED, "demo data"))
    for batch in db.session.scalars(select(Batch).where(Batch.status == BatchStatus.QUARANTINE)).all():
        if results.current_results(batch):
            continue
        entered = []
        for code, (value, unit) in DEMO_RESULTS.items():
            attachment = None
            if code == "VIABILITY":  # the cell counter's export, kept as raw data
                attachment = results.Attachment(
                    "NC200-viability-export.csv", "text/csv",
                    b"sample,viable_cells_per_ml,viability_percent\nfill-1,4.9e6,93.2\nfill-2,4.8e6,92.8\n")
            entered.append(results.enter_result(tech, batch, results.ResultInput(
                code, value, unit, "Demo Analyst", lab_today(), instrument="DEMO-INST",
                attachment=attachment)))
        results.enter_result(tech, batch, results.ResultInput("STERILITY", None, None, "Demo Analyst",
                                                              lab_today(), pending=True))
        for result in entered:
            results.verify_result(tech2, result)
