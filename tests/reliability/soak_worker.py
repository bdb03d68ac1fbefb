"""The race soak's world and workers (tests/reliability/test_race_soak.py).

``set_up_world`` builds, in the parent, what the workers fight over: users, the default
specification, released lots selected for the trial, lots in quarantine with results, the trial
with its list and eligible patients. ``run_worker`` is the target of each spawned process: it
builds its own app on the same database and runs a seeded mix of the real service calls, aimed
at the same few records so that they contend, until the deadline. It counts, per kind, what it
attempted, what succeeded (with the ids of the records the success wrote, so the parent can find
each one in the database and in the audit trail), what was refused with a labsys domain error
(expected under contention) and anything else (a failure: a bug that leaked out of a service).

``check_invariants`` runs in the parent afterwards."""
from __future__ import annotations

import datetime as dt
import json
import random
import time
import traceback
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import exists, func, select
from tests.conftest import lab_today

SOAK_WEIGHT_KG = Decimal("40.0")  # 40 kg × 500 000 cells/kg = 20e6 cells: two vials of 10e6
RELEASED_LOTS = 2
RELEASED_LOT_VIALS = 12
QUARANTINE_LOTS = 4
QUARANTINE_LOT_VIALS = 4
MISSING_CODES = ("KARYOTYPE", "STERILITY")  # left out of some lots: entered by the workers
PATIENTS = 24
RANDOMIZED = 12  # of them randomized with an order in the set-up; the rest are left to the workers
STAGED_THAWED = 2  # cell-arm orders with vials allocated and thawed: dispensing can start at once
STAGED_ALLOCATED = 2  # cell-arm orders with vials allocated: thawing can start at once
TARGET_ENROLMENT = 400
CONTENDED = 2  # each operation picks among the first few candidates, so workers collide


def passing_potency(lot_identifier: str) -> dict:
    """The approved potency run every lot has in the soak (the release feature's hook)."""
    return {"percent_inhibition": Decimal("35.0"), "run_valid": True, "run_reference": f"PR-{lot_identifier[-4:]}"}


def build_app(url: str, engine_options: dict):
    from labsys import create_app
    from tests.conftest import _config

    app = create_app(_config(url, SQLALCHEMY_ENGINE_OPTIONS=engine_options))
    app.extensions["labsys_release_potency"] = passing_potency
    return app


def _users() -> dict:
    from labsys.auth.services import find_user
    from labsys.cli import DEMO_USERS

    return {username: find_user(username) for username, _, _ in DEMO_USERS}


# ---------------------------------------------------------------------------------------- set-up

def set_up_world() -> dict:
    """In the parent, inside an app context on the shared database."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.chain_of_custody import services as custody
    from labsys.cli import ensure_demo_users
    from labsys.db import utcnow
    from labsys.release import decisions, specs
    from labsys.release.selection import select_for_trial
    from labsys.trial import orders as trial_orders
    from labsys.trial import services as trial_services
    from labsys.trial.demo import DEMO_TRIAL
    from labsys.trial.rules import ARM_MSC
    from tests.release.conftest import LotBuilder, enter_results
    from tests.trial.conftest import screening_values

    ensure_demo_users()
    users = _users()
    specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365),
                                        SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "soak specification"))
    builder = LotBuilder(users, prefix="D-SETUP")
    for _n in range(RELEASED_LOTS):
        lot = builder.lot(vial_count=RELEASED_LOT_VIALS)
        enter_results(users, lot)
        decisions.decide_lot(users["qa"], lot, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                             "meets specification", None)
        select_for_trial(users["qa"], lot, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "select"))
    for number in range(QUARANTINE_LOTS):
        lot = builder.lot(vial_count=QUARANTINE_LOT_VIALS)
        enter_results(users, lot, skip=MISSING_CODES if number % 2 else ())
    trial = trial_services.save_trial(users["pharmacist"], {**DEMO_TRIAL, "dose_cells_per_kg": 500_000,
                                                            "target_enrolment": TARGET_ENROLMENT})
    trial_services.generate_allocation_list(users["pharmacist"], trial, rng=random.Random(11))
    patients = [trial_services.enrol_patient(users["investigator"], trial,
                                             screening_values(trial, f"SCR-S{number:03d}", weight_kg=SOAK_WEIGHT_KG))
                for number in range(PATIENTS)]
    # Work already under way when the soak starts, so that every kind of operation has targets
    # from the first second (and the workers contend for them).
    staged = 0
    for patient in patients[:RANDOMIZED]:
        arm = trial_services.randomize_patient(users["pharmacist"], patient)
        order = trial_orders.order_infusion(users["investigator"], patient, lab_today())
        if arm == ARM_MSC and staged < STAGED_THAWED + STAGED_ALLOCATED:
            vials = custody.propose_vials(order).vials
            custody.allocate(users["pharmacist"], order, [vial.identifier for vial in vials])
            if staged < STAGED_THAWED:
                for vial in vials:
                    custody.thaw(users["pharmacist"], vial)
            staged += 1
    return {"reagent_ids": builder.reagent_ids, "baseline": baseline()}


# Records each kind of operation creates or changes, and the audit action that must record it.
KINDS: dict[str, tuple[str, str]] = {
    # kind: (entity table whose ids the success reports, audit action)
    "enrol": ("trial_patients", "trial.enrol"),
    "randomize": ("trial_patients", "trial.randomize"),
    "order": ("trial_infusion_orders", "trial.order"),
    "allocate": ("custody_allocations", "custody.allocate"),
    "cancel_allocation": ("custody_allocations", "custody.allocation_cancel"),
    "thaw": ("vial_events", "custody.thaw"),
    "dispense": ("custody_dispensings", "custody.dispense"),
    "release": ("release_decisions", "lot.release"),
    "reject": ("release_decisions", "lot.reject"),
    "select": ("trial_lot_selections", "lot.select_for_trial"),
    "enter_result": ("qc_results", "qc_result.enter"),
    "verify_result": ("qc_results", "qc_result.verify"),
    "correct_result": ("qc_results", "qc_result.correct"),
    "build_lot": ("fills", "batch.fill"),
}


def baseline() -> dict[str, int]:
    """The highest id of each table the workers write, before they start."""
    from labsys.extensions import db

    tables = {table for table, _action in KINDS.values()} | {"audit_entries"}
    metadata = db.Model.metadata.tables
    return {name: db.session.scalar(select(func.coalesce(func.max(metadata[name].c.id), 0))) for name in tables}


# ---------------------------------------------------------------------------------------- operations

class Context:
    def __init__(self, rng: random.Random, worker: int, reagent_ids: list[int]):
        self.rng = rng
        self.worker = worker
        self.reagent_ids = reagent_ids
        self.lots_built = 0
        self.patients_enrolled = 0

    def pick(self, candidates: list) -> Any:
        return self.rng.choice(candidates[:CONTENDED]) if candidates else None


def _trial():
    from labsys.trial.services import get_trial

    return get_trial()


def op_enrol(ctx: Context, users: dict) -> list[int] | None:
    from labsys.trial import services as trial_services
    from tests.trial.conftest import screening_values

    ctx.patients_enrolled += 1
    trial = _trial()
    # Two workers sometimes enrol the same screening number: one must be refused.
    number = f"SCR-W{ctx.rng.randrange(2)}{ctx.worker}-{ctx.patients_enrolled:04d}" if ctx.rng.random() < 0.7 \
        else f"SCR-SHARED-{ctx.patients_enrolled:04d}"
    patient = trial_services.enrol_patient(users["investigator"], trial,
                                           screening_values(trial, number, weight_kg=SOAK_WEIGHT_KG))
    return [patient.id]


def op_randomize(ctx: Context, users: dict) -> list[int] | None:
    from labsys.extensions import db
    from labsys.trial import services as trial_services
    from labsys.trial.models import EligibilityStatus, Patient

    candidates = list(db.session.scalars(select(Patient).where(
        Patient.eligibility == EligibilityStatus.ELIGIBLE, Patient.randomized_at.is_(None))
        .order_by(Patient.id).limit(CONTENDED)))
    patient = ctx.pick(candidates)
    if patient is None:
        return None
    trial_services.randomize_patient(users[ctx.rng.choice(["pharmacist", "pharmacist2"])], patient)
    return [patient.id]


def op_order(ctx: Context, users: dict) -> list[int] | None:
    from labsys.extensions import db
    from labsys.trial import orders as trial_orders
    from labsys.trial.models import InfusionOrder, Patient

    candidates = list(db.session.scalars(select(Patient).where(
        Patient.randomized_at.is_not(None), ~exists().where(InfusionOrder.patient_id == Patient.id))
        .order_by(Patient.id).limit(CONTENDED)))
    patient = ctx.pick(candidates)
    if patient is None:
        return None
    order = trial_orders.order_infusion(users["investigator"], patient, lab_today())
    return [order.id]


_ARMS: dict[int, str | None] = {}  # patient id → arm (it never changes once randomized)


def _open_cell_orders():
    """Open orders of cell-arm patients, oldest first (control-arm orders stay open: the soak
    prepares no placebo, so they are skipped, not counted against a limit)."""
    from labsys.extensions import db
    from labsys.trial.models import InfusionOrder, OrderStatus
    from labsys.trial.rules import ARM_MSC
    from labsys.trial.services import arm_of

    orders = db.session.scalars(select(InfusionOrder).where(InfusionOrder.status == OrderStatus.OPEN)
                                .order_by(InfusionOrder.id))
    found = []
    for order in orders:
        if order.patient_id not in _ARMS:
            _ARMS[order.patient_id] = arm_of(order.patient)
        if _ARMS[order.patient_id] == ARM_MSC:
            found.append(order)
    return found


def op_allocate(ctx: Context, users: dict) -> list[int] | None:
    from labsys.batches.states import VialStatus
    from labsys.batches.vials import vials_of
    from labsys.chain_of_custody import services as custody

    order = ctx.pick([o for o in _open_cell_orders() if not custody.active_allocations(o)])
    if order is None:
        return None
    proposal = custody.propose_vials(order)
    if not proposal.vials:
        return None
    chosen = [vial.identifier for vial in proposal.vials]
    if ctx.rng.random() < 0.5:  # the pharmacist picks other vials of the lot than the proposal's
        stock = [vial.identifier for vial in vials_of(proposal.lot, VialStatus.AVAILABLE)]
        chosen = ctx.rng.sample(stock, len(chosen)) if len(stock) >= len(chosen) else chosen
    allocations = custody.allocate(users[ctx.rng.choice(["pharmacist", "pharmacist2"])], order, chosen)
    return [allocation.id for allocation in allocations]


def op_cancel_allocation(ctx: Context, users: dict) -> list[int] | None:
    from labsys.batches.states import VialStatus
    from labsys.chain_of_custody import services as custody

    order = ctx.pick([o for o in _open_cell_orders() if custody.active_allocations(o) and all(
        VialStatus(a.vial.status) == VialStatus.ALLOCATED for a in custody.active_allocations(o))])
    if order is None:
        return None
    allocations = custody.cancel_allocation(users[ctx.rng.choice(["pharmacist", "pharmacist2"])], order,
                                            "soak: allocation cancelled")
    return [allocation.id for allocation in allocations]


def op_thaw(ctx: Context, users: dict) -> list[int] | None:
    from labsys.batches.models import Vial
    from labsys.batches.states import VialStatus
    from labsys.chain_of_custody import services as custody
    from labsys.extensions import db

    candidates = list(db.session.scalars(select(Vial).where(Vial.status == VialStatus.ALLOCATED)
                                         .order_by(Vial.id).limit(CONTENDED + 1)))
    vial = ctx.pick(candidates)
    if vial is None:
        return None
    event = custody.thaw(users[ctx.rng.choice(["pharmacist", "pharmacist2"])], vial)
    return [event.id]


def op_dispense(ctx: Context, users: dict) -> list[int] | None:
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.batches.states import VialStatus
    from labsys.chain_of_custody import services as custody

    ready = []
    for order in _open_cell_orders():
        allocations = custody.active_allocations(order)
        if allocations and all(VialStatus(a.vial.status) == VialStatus.THAWED for a in allocations):
            ready.append((order, [a.vial for a in allocations]))
    chosen = ctx.pick(ready)
    if chosen is None:
        return None
    order, vials = chosen
    dispenser, witness = ctx.rng.sample(["pharmacist", "pharmacist2"], 2)
    dispensing = custody.dispense(
        users[dispenser], SignatureCheck(users[dispenser], SignatureMeaning.DISPENSED, None),
        SignatureCheck(users[witness], SignatureMeaning.WITNESSED, None), custody.patient_payload(order.patient),
        [custody.vial_payload(vial) for vial in vials])
    return [dispensing.id]


def _quarantine_lots():
    from labsys.batches.models import Batch
    from labsys.batches.states import BatchStatus
    from labsys.extensions import db

    return list(db.session.scalars(select(Batch).where(Batch.status == BatchStatus.QUARANTINE)
                                   .order_by(Batch.id).limit(CONTENDED)))


def _decide(ctx: Context, users: dict, release: bool) -> list[int] | None:
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.release import decisions

    lot = ctx.pick(_quarantine_lots())
    if lot is None:
        return None
    qa = users[ctx.rng.choice(["qa", "qa2"])]
    meaning = SignatureMeaning.RELEASED if release else SignatureMeaning.REJECTED
    decision = decisions.decide_lot(qa, lot, release, SignatureCheck(qa, meaning, "soak"),
                                    "soak release" if release else "soak: rejected", None)
    return [decision.id]


def op_release(ctx: Context, users: dict) -> list[int] | None:
    return _decide(ctx, users, True)


def op_reject(ctx: Context, users: dict) -> list[int] | None:
    return _decide(ctx, users, False)


def op_select(ctx: Context, users: dict) -> list[int] | None:
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.batches.models import Batch
    from labsys.batches.states import BatchStatus
    from labsys.extensions import db
    from labsys.release.models import TrialSelection
    from labsys.release.selection import select_for_trial

    candidates = list(db.session.scalars(select(Batch).where(
        Batch.status == BatchStatus.RELEASED, ~exists().where(TrialSelection.batch_id == Batch.id))
        .order_by(Batch.id).limit(CONTENDED)))
    lot = ctx.pick(candidates)
    if lot is None:
        return None
    qa = users[ctx.rng.choice(["qa", "qa2"])]
    selection = select_for_trial(qa, lot, SignatureCheck(qa, SignatureMeaning.APPROVED, "soak select"))
    return [selection.id]


def op_enter_result(ctx: Context, users: dict) -> list[int] | None:
    from labsys.release import results
    from tests.release.conftest import PASSING, result_input

    lot = ctx.pick(_quarantine_lots())
    if lot is None:
        return None
    missing = [code for code in MISSING_CODES if results.current_result(lot, code) is None]
    code = ctx.rng.choice(missing or list(MISSING_CODES))  # a present code: refused ("correct it instead")
    value, unit = PASSING[code]
    result = results.enter_result(users[ctx.rng.choice(["technician", "technician2"])], lot,
                                  result_input(code, value, unit))
    return [result.id]


def op_verify_result(ctx: Context, users: dict) -> list[int] | None:
    from labsys.release import results

    candidates = [r for lot in _quarantine_lots() for r in results.results_awaiting_verification(lot)]
    result = ctx.pick(candidates)
    if result is None:
        return None
    verifier = "technician2" if result.entered_by_id == users["technician"].id else "technician"
    results.verify_result(users[verifier], result)
    return [result.id]


def op_correct_result(ctx: Context, users: dict) -> list[int] | None:
    from labsys.release import results
    from tests.release.conftest import PASSING, result_input

    lot = ctx.pick(_quarantine_lots())
    if lot is None:
        return None
    code = ctx.rng.choice(["VIABILITY", "ENDOTOXIN", "APPEARANCE"])
    current = results.current_result(lot, code)
    if current is None:
        return None
    value, unit = PASSING[code]
    new = results.correct_result(users[ctx.rng.choice(["technician", "technician2"])], current,
                                 result_input(code, value, unit), "soak: transcription check")
    return [new.id]


def op_build_lot(ctx: Context, users: dict) -> list[int] | None:
    """A new lot in quarantine (donor to fill through the batches services) with its results, so
    that a long soak never runs out of lots to decide."""
    from labsys.batches.models import Fill
    from labsys.extensions import db
    from tests.release.conftest import LotBuilder, enter_results

    ctx.lots_built += 1
    builder = LotBuilder(users, prefix=f"D-W{ctx.worker}-{ctx.lots_built:04d}", reagent_ids=ctx.reagent_ids)
    lot = builder.lot(vial_count=QUARANTINE_LOT_VIALS)
    fill_id = db.session.scalar(select(Fill.id).where(Fill.batch_id == lot.id))
    # The fast builder writes results without the services' checks: it leaves the codes the
    # workers enter (through the service) to them, or it could duplicate one.
    enter_results(users, lot, skip=MISSING_CODES)
    return [fill_id]


OPERATIONS: dict[str, tuple[Callable[[Context, dict], list[int] | None], int]] = {
    "enrol": (op_enrol, 3),
    "randomize": (op_randomize, 8),
    "order": (op_order, 8),
    "allocate": (op_allocate, 10),
    "cancel_allocation": (op_cancel_allocation, 2),
    "thaw": (op_thaw, 10),
    "dispense": (op_dispense, 10),
    "release": (op_release, 4),
    "reject": (op_reject, 2),
    "select": (op_select, 4),
    "enter_result": (op_enter_result, 6),
    "verify_result": (op_verify_result, 6),
    "correct_result": (op_correct_result, 4),
    "build_lot": (op_build_lot, 1),
}


def run_worker(spec: dict, start: Any) -> None:
    """Process target: run the mix until the deadline and write the figures to spec['out']."""
    entered = time.time()
    from labsys.errors import LabsysError
    from labsys.extensions import db

    rng = random.Random(spec["seed"] + spec["worker"])
    app = build_app(spec["url"], spec["engine_options"])
    names = list(OPERATIONS)
    weights = [OPERATIONS[name][1] for name in names]
    figures: dict[str, Any] = {
        "worker": spec["worker"], "attempted": Counter(), "succeeded": Counter(), "refused": Counter(),
        "idle": Counter(), "failed": Counter(), "refusals": Counter(), "ids": defaultdict(list), "failures": [],
        "seconds": Counter(), "timeline": {}}
    figures["timeline"].update(entered=entered, app_built=time.time())
    with app.app_context():
        ctx = Context(rng, spec["worker"], spec["reagent_ids"])
        users = _users()  # warm up (first queries, lazy imports) before the start
        db.session.rollback()
        # Start together, so that the processes really contend from the first operation.
        figures["timeline"]["ready"] = time.time()
        start.wait(timeout=120)
        figures["timeline"]["started"] = time.time()
        deadline = time.time() + spec["seconds"]
        while time.time() < deadline:
            name = rng.choices(names, weights)[0]
            operation = OPERATIONS[name][0]
            db.session.rollback()  # a fresh read of what the others committed
            began = time.perf_counter()
            try:
                users = _users()
                ids = operation(ctx, users)
            except LabsysError as error:
                figures["attempted"][name] += 1
                figures["refused"][name] += 1
                figures["refusals"][f"{name}: {type(error).__name__}"] += 1
            except Exception as error:  # noqa: BLE001 - anything else is a bug to report
                figures["attempted"][name] += 1
                figures["failed"][name] += 1
                figures["failures"].append({"operation": name, "error": f"{type(error).__name__}: {error}"[:2000],
                                            "traceback": traceback.format_exc()[-4000:]})
                db.session.rollback()
            else:
                if ids is None:
                    figures["idle"][name] += 1  # nothing to act on: not an attempt
                else:
                    figures["attempted"][name] += 1
                    figures["succeeded"][name] += 1
                    figures["ids"][name].extend(ids)
            figures["seconds"][name] += time.perf_counter() - began
        figures["timeline"]["stopped"] = time.time()
        db.session.remove()
        db.engine.dispose()
    figures["timeline"]["written"] = time.time()
    Path(spec["out"]).write_text(json.dumps(figures, default=dict, indent=1))


# ---------------------------------------------------------------------------------------- invariants

VIAL_EVENT_STATES = {  # custody event → the state it moves a vial to (others leave it where it is)
    "allocated": "allocated", "returned": "available", "thawed": "thawed", "dispensed": "dispensed",
    "administered": "administered", "destroyed": "destroyed"}


def replay_vial(events: list[str]) -> tuple[str, list[str]]:
    """The state a vial reaches by replaying its custody events from quarantine, and any step
    the state table does not allow."""
    from labsys.batches.states import VialStatus, vial_may_move

    state = VialStatus.QUARANTINE
    problems = []
    for event in events:
        target = event.split(".", 1)[1] if event.startswith("status.") else VIAL_EVENT_STATES.get(event)
        if target is None:
            continue
        if not vial_may_move(state, VialStatus(target)):
            problems.append(f"{state.value} -> {target}")
        state = VialStatus(target)
    return state.value, problems


def check_invariants(before: dict[str, int], workers: list[dict]) -> dict[str, Any]:
    """Every invariant, each as {name: {"ok": bool, ...details}} (run in the parent's app context)."""
    from labsys.audit.models import AuditEntry
    from labsys.audit.services import verify_chain
    from labsys.batches.models import Batch, Fill, Vial, VialEvent
    from labsys.batches.states import BatchStatus, VialStatus
    from labsys.chain_of_custody.models import AllocationStatus, CustodyAllocation, Dispensing
    from labsys.extensions import db
    from labsys.release.models import QCResult, ReleaseDecision
    from labsys.trial.models import AllocationEntry, InfusionOrder, OrderStatus, Patient

    session = db.session
    session.rollback()
    found: dict[str, Any] = {}

    # No vial dispensed twice: one dispensed event per vial, one dispensing naming it.
    dispensed_events = Counter(session.scalars(select(VialEvent.vial_id).where(VialEvent.event_type == "dispensed")))
    named = Counter(identifier for row in session.scalars(select(Dispensing.vial_identifiers))
                    for identifier in row.split(",") if identifier)
    found["no_vial_dispensed_twice"] = {
        "ok": all(n == 1 for n in dispensed_events.values()) and all(n == 1 for n in named.values())
        and len(dispensed_events) == len(named),
        "vials_dispensed": len(dispensed_events), "dispensings": session.scalar(select(func.count(Dispensing.id)))}

    # No allocation-list line used twice; each randomized patient holds exactly one line.
    used = Counter(session.scalars(select(AllocationEntry.used_by_patient_id)
                                   .where(AllocationEntry.used_by_patient_id.is_not(None))))
    randomized = list(session.execute(select(Patient.id, Patient.study_id).where(Patient.randomized_at.is_not(None))))
    sequences = dict(session.execute(select(AllocationEntry.used_by_patient_id, AllocationEntry.sequence)
                                     .where(AllocationEntry.used_by_patient_id.is_not(None))).all())
    found["no_allocation_entry_used_twice"] = {
        "ok": all(n == 1 for n in used.values()) and set(used) == {pid for pid, _s in randomized}
        and all(study == f"P-{sequences[pid]:03d}" for pid, study in randomized),
        "patients_randomized": len(randomized), "lines_used": len(used)}

    # One infusion order per patient (cancelled ones aside).
    orders = Counter(session.scalars(select(InfusionOrder.patient_id).where(
        InfusionOrder.status != OrderStatus.CANCELLED)))
    found["one_order_per_patient"] = {"ok": all(n == 1 for n in orders.values()), "orders": sum(orders.values()),
                                      "patients_with_two": sorted(p for p, n in orders.items() if n > 1)}

    # No lot with two decisions; a decided lot's status matches its decision; undecided lots are in quarantine.
    decisions = Counter(session.scalars(select(ReleaseDecision.batch_id)))
    kinds = dict(session.execute(select(ReleaseDecision.batch_id, ReleaseDecision.decision)).all())
    statuses = dict(session.execute(select(Batch.id, Batch.status)).all())
    mismatched = [b for b, status in statuses.items()
                  if (b in kinds and status.value != kinds[b].value and status != BatchStatus.RECALLED)
                  or (b not in kinds and status != BatchStatus.QUARANTINE)]
    found["no_lot_with_two_decisions"] = {"ok": all(n == 1 for n in decisions.values()) and not mismatched,
                                          "decisions": sum(decisions.values()), "status_mismatch": mismatched}

    # One set of vials per order: its allocations are all active, or all dispensed, one set of
    # the vials the dose needs (cancelled sets aside).
    sets: dict[int, Counter] = defaultdict(Counter)
    for order_id, status in session.execute(select(CustodyAllocation.order_id, CustodyAllocation.status)):
        sets[order_id][status.value] += 1
    needed = dict(session.execute(select(InfusionOrder.id, InfusionOrder.target_cells)).all())
    per_vial = 10_000_000
    two_sets = {order_id: dict(counts) for order_id, counts in sets.items()
                if counts["active"] + counts["dispensed"] not in (0, -(-needed[order_id] // per_vial))
                or (counts["active"] and counts["dispensed"])}
    found["one_vial_set_per_order"] = {"ok": not two_sets, "orders_with_vials": len(sets),
                                       "orders_with_two_sets": two_sets}

    # One current QC result per lot and test.
    current = Counter(session.execute(select(QCResult.batch_id, QCResult.test_code)
                                      .where(QCResult.superseded_by_id.is_(None))).all())
    found["one_current_result_per_test"] = {"ok": all(n == 1 for n in current.values()),
                                            "duplicates": [f"{b}/{c}" for (b, c), n in current.items() if n > 1]}

    # Every vial's state is the state its custody events replay to.
    events: dict[int, list[str]] = defaultdict(list)
    for vial_id, event_type in session.execute(select(VialEvent.vial_id, VialEvent.event_type)
                                               .order_by(VialEvent.id)):
        events[vial_id].append(event_type)
    vials = list(session.execute(select(Vial.id, Vial.identifier, Vial.status, Vial.batch_id)))
    wrong = []
    for vial_id, identifier, status, _batch in vials:
        state, problems = replay_vial(events[vial_id])
        if state != status.value or problems:
            wrong.append({"vial": identifier, "status": status.value, "replayed": state, "problems": problems})
    found["vial_state_equals_replayed_custody"] = {"ok": not wrong, "vials": len(vials), "wrong": wrong[:20]}

    # Counts add up: each lot's vials = its fill's count = the sum over states; a lot's status
    # fits its vials; every allocated or thawed vial has one active allocation, every active
    # allocation's vial is allocated or thawed; each dispensing's order is prepared.
    per_lot: dict[int, Counter] = defaultdict(Counter)
    for _vid, _identifier, status, batch_id in vials:
        per_lot[batch_id][status.value] += 1
    fills = dict(session.execute(select(Fill.batch_id, Fill.vial_count)).all())
    lot_problems = []
    for batch_id, count in fills.items():
        states = per_lot[batch_id]
        if sum(states.values()) != count:
            lot_problems.append(f"lot {batch_id}: {sum(states.values())} vials, fill says {count}")
        status = statuses[batch_id]
        if status == BatchStatus.QUARANTINE and set(states) != {"quarantine"}:
            lot_problems.append(f"lot {batch_id} in quarantine has {dict(states)}")
        if status == BatchStatus.REJECTED and set(states) != {"destroyed"}:
            lot_problems.append(f"lot {batch_id} rejected has {dict(states)}")
        if status == BatchStatus.RELEASED and "quarantine" in states:
            lot_problems.append(f"lot {batch_id} released has quarantined vials")
    active = Counter(session.scalars(select(CustodyAllocation.vial_id)
                                     .where(CustodyAllocation.status == AllocationStatus.ACTIVE)))
    in_use = {vid for vid, _i, status, _b in vials if status in (VialStatus.ALLOCATED, VialStatus.THAWED)}
    if set(active) != in_use or any(n != 1 for n in active.values()):
        lot_problems.append(f"active allocations {sorted(active)} vs allocated/thawed vials {sorted(in_use)}")
    dispensed_alloc = set(session.scalars(select(CustodyAllocation.vial_id)
                                          .where(CustodyAllocation.status == AllocationStatus.DISPENSED)))
    dispensed_vials = {vid for vid, _i, status, _b in vials if status == VialStatus.DISPENSED}
    if dispensed_alloc != dispensed_vials:
        lot_problems.append("dispensed allocations differ from dispensed vials")
    unprepared = session.scalar(select(func.count(Dispensing.id)).join(
        InfusionOrder, InfusionOrder.id == Dispensing.order_id).where(InfusionOrder.status != OrderStatus.PREPARED))
    prepared_without = session.scalar(select(func.count(InfusionOrder.id)).where(
        InfusionOrder.status == OrderStatus.PREPARED, ~exists().where(Dispensing.order_id == InfusionOrder.id)))
    if unprepared or prepared_without:
        lot_problems.append(f"{unprepared} dispensings of unprepared orders, {prepared_without} prepared orders "
                            "without dispensing")
    found["counts_add_up"] = {"ok": not lot_problems, "lots": len(fills), "problems": lot_problems[:20],
                              "vials_by_state": dict(sum(per_lot.values(), Counter()))}

    # Every success a worker reported is in the database and in the audit trail, once; nothing
    # new of those kinds exists that no worker reported.
    claimed: dict[str, list[int]] = defaultdict(list)
    for figures in workers:
        for kind, ids in figures["ids"].items():
            claimed[kind].extend(ids)
    audit_problems = []
    for kind, (table, action) in KINDS.items():
        ids = claimed.get(kind, [])
        if len(ids) != len(set(ids)):
            audit_problems.append(f"{kind}: an id was reported by two successes")
        audited = set(session.scalars(select(AuditEntry.entity_id).where(
            AuditEntry.action == action, AuditEntry.entity_type == table,
            AuditEntry.seq > before["audit_entries"])))
        missing = {str(i) for i in ids} - audited
        if missing:
            audit_problems.append(f"{kind}: {len(missing)} successes without an audit entry ({action} on {table})")
        if kind in ("enrol", "order", "dispense", "select", "build_lot"):  # one new row per success
            column = db.Model.metadata.tables[table].c.id
            new_rows = set(session.scalars(select(column).where(column > before[table])))
            created = {i for k, v in claimed.items() if KINDS[k][0] == table
                       and k in ("enrol", "order", "dispense", "select", "build_lot") for i in v}
            if new_rows != created:
                audit_problems.append(f"{kind}: {len(new_rows)} new {table} rows, {len(created)} reported")
    new_decisions = set(session.scalars(select(ReleaseDecision.id).where(
        ReleaseDecision.id > before["release_decisions"])))
    if new_decisions != set(claimed.get("release", [])) | set(claimed.get("reject", [])):
        audit_problems.append("release decisions differ from the reported releases and rejections")
    found["successes_in_audit_trail"] = {"ok": not audit_problems, "problems": audit_problems,
                                        "audit_entries_written": session.scalar(
                                            select(func.count(AuditEntry.id)).where(
                                                AuditEntry.seq > before["audit_entries"]))}

    chain = verify_chain(session)
    found["verify_chain"] = {"ok": chain.ok, "entries": chain.entries, "problem": chain.problem}
    session.rollback()
    return found
