"""The child of the crash-safety tests (tests/reliability/test_crash_safety.py).

``run_child`` builds its own app on the shared database, loads the target prepared by the
parent, then arms SQLAlchemy event listeners on its engine that count every statement sent to
the database and every COMMIT, and runs one multi-row service. With a kill point it sends itself
SIGKILL at that exact place — before statement K, just before COMMIT number C, or just after it —
so the database sees a client vanish mid-transaction (no rollback, no clean-up, no exit
handlers). Without one it runs to the end and writes the statement log, which the parent uses
to choose the kill points."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

FILL_VIALS = 500
FILL_CELLS_PER_VIAL = 200_000  # 500 × 2e5 = 1e8 cells, within the 1.44e8 a two-passage lot harvests


def build_app(url: str, engine_options: dict, extra: dict | None = None):
    from labsys import create_app
    from tests.conftest import _config

    return create_app(_config(url, SQLALCHEMY_ENGINE_OPTIONS=engine_options, **(extra or {})))


def _user(username: str):
    from labsys.auth.services import find_user

    return find_user(username)


# --------------------------------------------------------------------------- the three operations

def fill_500(target: dict) -> Callable[[], Any]:
    """(a) Fill 500 vials of a batch in process (batches fill service: one unit of work)."""
    from labsys.batches import vials as vial_services
    from labsys.batches.models import Batch
    from labsys.extensions import db

    batch = db.session.get(Batch, target["batch_id"])
    technician = _user("technician")
    last = batch.passages[-1].step.ended_at

    def operation():
        return vial_services.fill_batch(technician, batch, FILL_VIALS, FILL_CELLS_PER_VIAL, Decimal("5.0"),
                                        "CryoStor CS10", Decimal("93.0"), last + dt.timedelta(hours=3), "FILL-01",
                                        last + dt.timedelta(hours=2), target["reagent_ids"])

    return operation


def score_plate(target: dict) -> Callable[[], Any]:
    """(b) Score a potency plate: the job scores each field and stores it in its own unit of
    work (the field is the atomic unit), then aggregates wells, lots and validity in one more.

    The image analysis is pure and deterministic (tests/potency memoises it the same way): the
    full run scores every field for real and keeps the outcomes in ``target["score_cache"]``;
    the children killed later reuse them by image content, so that they spend their time on what
    is under test here, the database writes."""
    import dataclasses
    import hashlib
    import pickle

    from labsys.potency import jobs

    cache_path = Path(target["score_cache"])
    cache: dict[str, Any] = pickle.loads(cache_path.read_bytes()) if cache_path.exists() else {}
    real = jobs.score_stored_field

    def scored(image_id, path, *rest):
        key = hashlib.sha256(Path(path).read_bytes()).hexdigest() + repr(rest)
        if key not in cache:
            cache[key] = real(image_id, path, *rest)
            cache_path.write_bytes(pickle.dumps(cache))
        return dataclasses.replace(cache[key], image_id=image_id)

    jobs.score_stored_field = scored

    def operation():
        return jobs.score_run(target["run_id"])

    return operation


def dispense_vials(target: dict) -> Callable[[], Any]:
    """(c) Dispense several thawed vials to a patient at once, with a witness."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.batches.vials import find_vial
    from labsys.chain_of_custody import services as custody
    from labsys.extensions import db
    from labsys.trial.models import Patient

    patient = db.session.get(Patient, target["patient_id"])
    pharmacist, witness = _user("pharmacist"), _user("pharmacist2")
    patient_code = custody.patient_payload(patient)
    vial_codes = [custody.vial_payload(find_vial(identifier)) for identifier in target["vials"]]

    def operation():
        return custody.dispense(pharmacist, SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, None),
                                SignatureCheck(witness, SignatureMeaning.WITNESSED, None), patient_code, vial_codes)

    return operation


SCENARIOS: dict[str, Callable[[dict], Callable[[], Any]]] = {
    "fill_500_vials": fill_500, "score_potency_plate": score_plate, "dispense_vials": dispense_vials}


# --------------------------------------------------------------------------- the child

def run_child(spec: dict) -> None:
    """Process target. spec: url, engine_options, config, scenario, target, kill ([kind, n] or
    None), out (the statement log of a full run)."""
    from labsys.extensions import db

    app = build_app(spec["url"], spec["engine_options"], spec.get("config"))
    kill = tuple(spec["kill"]) if spec.get("kill") else None
    with app.app_context():
        operation = SCENARIOS[spec["scenario"]](spec["target"])
        db.session.rollback()  # the loading reads end here; what follows is the operation
        counts = {"statements": 0, "commits": 0}
        log: list[tuple[int, str, int]] = []

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        @event.listens_for(db.engine, "before_cursor_execute")
        def before_statement(conn, cursor, statement, parameters, context, executemany):
            counts["statements"] += 1
            if kill == ("statement", counts["statements"]):
                die()
            log.append((counts["statements"], statement.lstrip().split(None, 1)[0].upper(), counts["commits"]))

        @event.listens_for(db.engine, "commit")
        def before_commit(conn):
            counts["commits"] += 1
            if kill == ("commit", counts["commits"]):
                die()

        @event.listens_for(Session, "after_commit")
        def after_commit(session):
            if kill == ("after_commit", counts["commits"]):
                die()

        result = operation()
        db.session.rollback()
    if kill is not None:
        # The kill point was never reached: the parent treats a clean exit as a failure.
        os._exit(3)
    Path(spec["out"]).write_text(json.dumps({"statements": log, "commits": counts["commits"],
                                             "result": repr(result)[:200]}))
