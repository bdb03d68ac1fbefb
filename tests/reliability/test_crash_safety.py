"""Crash safety: a child process running a multi-row service is killed with SIGKILL at chosen
statements (tests/reliability/crash_child.py counts every statement and COMMIT and kills itself
at an exact one). The parent, on a fresh engine, then finds all of the operation or none of it —
never a part — a sound audit chain, and that the operation can be done afterwards. On SQLite and
PostgreSQL.

(a) Filling 500 vials: one unit of work; after a kill before COMMIT there are 0 vials, no fill and
    no audit entry; after a kill just after COMMIT, all 500 and their audit entries.
(b) Scoring a potency plate: the job stores each field in its own unit of work, so the atomic unit
    is the field (its score, the run's progress counters and their audit entries together); the
    aggregation (lot results, validity, state "scored") is one more. A kill leaves whole fields
    only, never lot results without the state, and a stuck run is recovered as a user would:
    stop scoring (with a reason), score again.
(c) Dispensing four vials at once: all four dispensed with the dispensing record, the order
    prepared and both signatures — or all four still thawed, nothing written.

Each scenario is first run to the end in a child to count its statements; the kill points are
chosen from that log (first write, middle, last statement, just before COMMIT, just after).
Figures go to test-artifacts/reliability/crash-<engine>.json."""
from __future__ import annotations

import datetime as dt
import json
import random
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labsys.extensions import db as _db
from tests.conftest import make_app
from tests.reliability import crash_child, processes
from tests.conftest import lab_today

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
CHILD_TIMEOUT = 240


# --------------------------------------------------------------------------- helpers

def table_counts() -> dict[str, int]:
    """Rows per table, except ``audit_counts``: the trigger-kept totals of the audit entries gain
    a row only the first time a record type and action occur, so the same write adds a row on
    the first run and none on the next (tests/audit check the totals against the entries)."""
    _db.session.rollback()
    return {table.name: _db.session.scalar(select(func.count()).select_from(table))
            for table in _db.Model.metadata.sorted_tables if table.name != "audit_counts"}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def audit_head() -> int:
    from labsys.audit.models import AuditEntry

    return _db.session.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0)))


def chain_ok() -> dict:
    from labsys.audit.services import verify_chain

    result = verify_chain(_db.session)
    return {"ok": result.ok, "entries": result.entries, "problem": result.problem}


class Harness:
    """Runs children on the test's database and keeps the figures."""

    def __init__(self, app, engine_name: str, tmp_path: Path, extra_config: dict | None = None):
        self.app = app
        self.engine_name = engine_name
        self.tmp_path = tmp_path
        self.extra_config = extra_config or {}
        self.context = processes.context()
        self.runs = 0

    def child(self, scenario: str, target: dict, kill=None) -> tuple[int, dict | None]:
        self.runs += 1
        out = self.tmp_path / f"child-{self.runs}.json"
        spec = {"url": self.app.config["SQLALCHEMY_DATABASE_URI"],
                "engine_options": self.app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
                "config": self.extra_config, "scenario": scenario, "target": target,
                "kill": list(kill) if kill else None, "out": str(out)}
        with self.app.app_context():
            _db.session.remove()
        process = self.context.Process(target=crash_child.run_child, args=(spec,))
        process.start()
        process.join(CHILD_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail(f"{scenario} child with kill {kill} still running after {CHILD_TIMEOUT} s")
        # The parent looks with a fresh engine: no pooled connection from before the crash.
        with self.app.app_context():
            _db.engine.dispose()
        log = json.loads(out.read_text()) if out.exists() else None
        return process.exitcode, log

    def kill(self, scenario: str, target: dict, kill) -> None:
        exitcode, _log = self.child(scenario, target, kill)
        assert exitcode == -signal.SIGKILL, f"{scenario}: the child was not killed at {kill} (exit {exitcode})"


def kill_points(log: dict) -> list[tuple[str, int]]:
    """For a single-transaction operation: the first write, the middle statement between it and
    the last, the last statement, just before COMMIT and just after it."""
    commit = log["commits"]
    inside = [(n, verb) for n, verb, commits in log["statements"] if commits == commit - 1]
    writes = [n for n, verb in inside if verb in ("INSERT", "UPDATE")]
    first, last = writes[0], inside[-1][0]
    numbers = [n for n, _verb in inside if first <= n <= last]
    middle = numbers[len(numbers) // 2]
    points = sorted({first, middle, last})
    return [("statement", n) for n in points] + [("commit", commit), ("after_commit", commit)]


def statement_summary(log: dict) -> dict:
    verbs: dict[str, int] = {}
    for _n, verb, _c in log["statements"]:
        verbs[verb] = verbs.get(verb, 0) + 1
    return {"statements": len(log["statements"]), "commits": log["commits"], "by_verb": verbs}


def record(engine_name: str, scenario: str, figures: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"crash-{engine_name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[scenario] = figures
    data["summary"] = {
        "engine": engine_name,
        "scenarios": sorted(k for k in data if k != "summary"),
        "kill_points_survived": sum(v["kill_points_survived"] for k, v in data.items() if k != "summary"),
        "kill_points": sum(len(v["kills"]) for k, v in data.items() if k != "summary"),
        "operations_lost_or_partial": sum(v["lost_or_partial"] for k, v in data.items() if k != "summary")}
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\ncrash safety on {engine_name}, {scenario}: {figures['kill_points_survived']}/{len(figures['kills'])} "
          f"kill points survived, lost or partial: {figures['lost_or_partial']}, "
          f"full run {figures['full_run']['statements']} statements / {figures['full_run']['commits']} commits, "
          f"{figures['seconds']:.1f} s")
    for kill in figures["kills"]:
        print(f"  kill at {kill['kill'][0]} {kill['kill'][1]:>4}: found {kill['found']}")


@pytest.fixture
def crash_app(engine_name, tmp_path, sqlite_template):
    app, cleanup = make_app(engine_name, tmp_path, sqlite_template)
    with app.app_context():
        from labsys.cli import ensure_demo_users

        ensure_demo_users()
        _db.session.remove()
    yield app
    cleanup()


def _users() -> dict:
    from tests.reliability.soak_worker import _users

    return _users()


# --------------------------------------------------------------------------- (a) fill 500 vials

def fill_state(batch_id: int) -> str:
    from labsys.audit.models import AuditEntry
    from labsys.batches.models import Batch, Fill, Vial
    from labsys.batches.states import BatchStatus

    _db.session.rollback()
    vials = _db.session.scalar(select(func.count(Vial.id)).where(Vial.batch_id == batch_id))
    fills = _db.session.scalar(select(func.count(Fill.id)).where(Fill.batch_id == batch_id))
    status = _db.session.get(Batch, batch_id).status
    audited_vials = _db.session.scalar(select(func.count(AuditEntry.id)).where(
        AuditEntry.action == "batch.fill", AuditEntry.entity_type == "vials"))
    if vials == 0 and fills == 0 and status == BatchStatus.IN_PROCESS:
        return "none"
    if (vials == crash_child.FILL_VIALS and fills == 1 and status == BatchStatus.QUARANTINE
            and audited_vials >= crash_child.FILL_VIALS):
        return "all"
    return f"PARTIAL: {vials} vials, {fills} fills, batch {status.value}, {audited_vials} vial audit entries"


@pytest.mark.slow
def test_a_fill_of_500_vials_killed_at_any_statement_is_all_or_nothing(crash_app, engine_name, tmp_path):
    from tests.release.conftest import LotBuilder

    started = time.monotonic()
    harness = Harness(crash_app, engine_name, tmp_path)
    with crash_app.app_context():
        builder = LotBuilder(_users(), prefix="D-CRASH")
        measured, target = builder.lot(fill=False).id, builder.lot(fill=False).id
        reagent_ids = builder.reagent_ids
        _db.session.remove()

    def run(batch_id, kill=None):
        return harness.child("fill_500_vials", {"batch_id": batch_id, "reagent_ids": reagent_ids}, kill)

    with crash_app.app_context():
        before = table_counts()
    exitcode, log = run(measured)
    assert exitcode == 0, f"the full fill failed in the child (exit {exitcode})"
    with crash_app.app_context():
        assert fill_state(measured) == "all"
        full = delta(before, table_counts())
    assert full["vials"] == crash_child.FILL_VIALS and full["audit_entries"] > crash_child.FILL_VIALS, full

    kills = []
    for point in kill_points(log):
        with crash_app.app_context():
            before = table_counts()
        harness.kill("fill_500_vials", {"batch_id": target, "reagent_ids": reagent_ids}, point)
        with crash_app.app_context():
            found = fill_state(target)
            change = delta(before, table_counts())
            chain = chain_ok()
        expected = "all" if point[0] == "after_commit" else "none"
        kills.append({"kill": point, "found": found, "expected": expected, "rows_changed": change, "chain": chain})
        assert found == expected, kills[-1]
        assert change == ({} if expected == "none" else full), kills[-1]
        assert chain["ok"], kills[-1]

    record(engine_name, "fill_500_vials", {
        "full_run": statement_summary(log), "rows_written_by_full_run": full, "kills": kills,
        "kill_points_survived": len(kills), "lost_or_partial": 0, "seconds": time.monotonic() - started,
        "done_after_crashes": "all (the after-COMMIT child filled the batch)"})


# --------------------------------------------------------------------------- (c) dispense four vials

def ready_to_dispense(users, count: int) -> list[dict]:
    """``count`` cell-arm patients of 70 kg (35e6 cells: four vials of 1e7) with an open order and
    four vials allocated and thawed."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck
    from labsys.chain_of_custody import services as custody
    from labsys.release import decisions, specs
    from labsys.release.selection import select_for_trial
    from labsys.db import utcnow
    from labsys.trial import orders as trial_orders
    from labsys.trial import services as trial_services
    from labsys.trial.demo import DEMO_TRIAL
    from labsys.trial.rules import ARM_MSC
    from tests.release.conftest import LotBuilder, enter_results
    from tests.reliability.soak_worker import passing_potency
    from tests.trial.conftest import screening_values

    from flask import current_app

    current_app.extensions["labsys_release_potency"] = passing_potency
    specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365),
                                        SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "spec"))
    lot = LotBuilder(users, prefix="D-DISP").lot(vial_count=4 * count)
    enter_results(users, lot)
    decisions.decide_lot(users["qa"], lot, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                         "meets specification", None)
    select_for_trial(users["qa"], lot, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "select"))
    trial = trial_services.save_trial(users["pharmacist"], {**DEMO_TRIAL, "dose_cells_per_kg": 500_000})
    trial_services.generate_allocation_list(users["pharmacist"], trial, rng=random.Random(11))
    targets, number = [], 0
    while len(targets) < count:
        number += 1
        patient = trial_services.enrol_patient(users["investigator"], trial, screening_values(
            trial, f"SCR-K{number:03d}", weight_kg=Decimal("70.0")))
        if trial_services.randomize_patient(users["pharmacist"], patient) != ARM_MSC:
            continue
        order = trial_orders.order_infusion(users["investigator"], patient, lab_today())
        vials = custody.propose_vials(order).vials
        assert len(vials) == 4
        custody.allocate(users["pharmacist"], order, [v.identifier for v in vials])
        for vial in vials:
            custody.thaw(users["pharmacist"], vial)
        targets.append({"patient_id": patient.id, "order_id": order.id, "vials": [v.identifier for v in vials]})
    return targets


def dispense_state(target: dict) -> str:
    from labsys.auth.models import Signature
    from labsys.batches.models import Vial
    from labsys.chain_of_custody.models import AllocationStatus, CustodyAllocation, Dispensing
    from labsys.trial.models import InfusionOrder, OrderStatus

    _db.session.rollback()
    statuses = sorted(s.value for s in _db.session.scalars(select(Vial.status).where(
        Vial.identifier.in_(target["vials"]))))
    dispensings = list(_db.session.scalars(select(Dispensing).where(Dispensing.order_id == target["order_id"])))
    order = _db.session.get(InfusionOrder, target["order_id"])
    allocations = sorted(a.value for a in _db.session.scalars(select(CustodyAllocation.status).where(
        CustodyAllocation.order_id == target["order_id"])))
    signatures = _db.session.scalar(select(func.count(Signature.id)).where(
        Signature.entity_type == "custody_dispensings",
        Signature.entity_id.in_([str(d.id) for d in dispensings] or ["-"])))
    if (statuses == ["thawed"] * 4 and not dispensings and order.status == OrderStatus.OPEN
            and allocations == ["active"] * 4):
        return "none"
    if (statuses == ["dispensed"] * 4 and len(dispensings) == 1 and order.status == OrderStatus.PREPARED
            and allocations == [AllocationStatus.DISPENSED.value] * 4 and signatures == 2
            and sorted(dispensings[0].vial_list) == sorted(target["vials"])):
        return "all"
    return (f"PARTIAL: vials {statuses}, {len(dispensings)} dispensings, order {order.status.value}, "
            f"allocations {allocations}, {signatures} signatures")


@pytest.mark.slow
def test_c_dispensing_four_vials_killed_at_any_statement_is_all_or_nothing(crash_app, engine_name, tmp_path):
    started = time.monotonic()
    harness = Harness(crash_app, engine_name, tmp_path)
    with crash_app.app_context():
        measured, target = ready_to_dispense(_users(), 2)
        before = table_counts()
        _db.session.remove()
    exitcode, log = harness.child("dispense_vials", measured)
    assert exitcode == 0, f"the full dispensing failed in the child (exit {exitcode})"
    with crash_app.app_context():
        assert dispense_state(measured) == "all"
        full = delta(before, table_counts())
    assert full["custody_dispensings"] == 1 and full["vial_events"] == 4, full

    kills = []
    for point in kill_points(log):
        with crash_app.app_context():
            before = table_counts()
        harness.kill("dispense_vials", target, point)
        with crash_app.app_context():
            found = dispense_state(target)
            change = delta(before, table_counts())
            chain = chain_ok()
        expected = "all" if point[0] == "after_commit" else "none"
        kills.append({"kill": point, "found": found, "expected": expected, "rows_changed": change, "chain": chain})
        assert found == expected, kills[-1]
        assert change == ({} if expected == "none" else full), kills[-1]
        assert chain["ok"], kills[-1]

    record(engine_name, "dispense_vials", {
        "full_run": statement_summary(log), "rows_written_by_full_run": full, "kills": kills,
        "kill_points_survived": len(kills), "lost_or_partial": 0, "seconds": time.monotonic() - started,
        "done_after_crashes": "all (the after-COMMIT child dispensed the four vials)"})


# --------------------------------------------------------------------------- (b) score a potency plate

def potency_config(tmp_path: Path) -> dict:
    return {"POTENCY_IMAGE_DIR": str(tmp_path / "images"), "POTENCY_SCORING_PROCESSES": 1,
            "POTENCY_HUEY_IMMEDIATE": True, "POTENCY_HUEY_FILE": str(tmp_path / "huey.db")}


def scoring_run(users) -> int:
    """A run of the small plate layout (10 wells, one field each), images uploaded, in scoring."""
    from labsys.potency import services
    from tests.potency.app_support import layout_files, make_run

    run = make_run(users["technician"])
    services.upload_images(users["technician"], run, layout_files())
    services.start_scoring(users["technician"], run)
    return run.id


def potency_state(run_id: int, attempt: dict) -> dict:
    """What the database holds for the current scoring attempt (``attempt``: its start time and
    the audit head then): whole fields only — each field's score, the run's counters and both
    audit entries together — and lot results and the scored state only together."""
    from labsys.audit.models import AuditEntry
    from labsys.potency.models import FieldScore, LotResult
    from labsys.potency.services import get_run
    from labsys.potency.states import RunState

    _db.session.rollback()
    run = get_run(run_id)
    scores = list(_db.session.scalars(select(FieldScore).where(FieldScore.run_id == run_id,
                                                               FieldScore.scored_at >= attempt["started_at"])))
    audited = dict(_db.session.execute(select(AuditEntry.entity_type, func.count(AuditEntry.id)).where(
        AuditEntry.seq > attempt["audit_head"], AuditEntry.action == "potency.field.score")
        .group_by(AuditEntry.entity_type)).all())
    finished = _db.session.scalar(select(func.count(AuditEntry.id)).where(
        AuditEntry.seq > attempt["audit_head"], AuditEntry.action == "potency.scoring.finish"))
    lot_results = _db.session.scalar(select(func.count(LotResult.id)).where(LotResult.run_id == run_id))
    scored = run.state == RunState.SCORED
    whole_fields = (len(scores) == run.fields_done
                    and sum(1 for s in scores if s.status == "failed") == run.fields_failed
                    and audited.get("potency_field_scores", 0) == run.fields_done
                    and audited.get("potency_runs", 0) == run.fields_done)
    aggregation = (scored and finished >= 1 and lot_results > 0) or (
        run.state == RunState.SCORING and finished == 0 and lot_results == 0)
    return {"state": run.state.value, "fields_done": run.fields_done, "fields_total": run.fields_total,
            "whole_fields": whole_fields, "aggregation_all_or_nothing": aggregation,
            "lot_results": lot_results}


def potency_kill_points(log: dict) -> list[tuple[tuple[str, int], int, bool]]:
    """(kill point, fields expected done, scored expected): inside the first field's transaction,
    before and after a middle field's COMMIT, inside the aggregation, before and after its COMMIT."""
    last = log["commits"]
    middle = last // 2

    def first_write(commit: int) -> int:
        return next(n for n, verb, c in log["statements"] if c == commit - 1 and verb in ("INSERT", "UPDATE"))

    return [(("statement", first_write(1)), 0, False), (("commit", middle), middle - 1, False),
            (("after_commit", middle), middle, False), (("statement", first_write(last)), last - 1, False),
            (("commit", last), last - 1, False), (("after_commit", last), last - 1, True)]


@pytest.mark.slow
def test_b_scoring_a_potency_plate_killed_anywhere_keeps_whole_fields_and_can_be_scored_again(
        crash_app, engine_name, tmp_path):
    from labsys.db import utcnow
    from labsys.potency import services
    from labsys.potency.models import LotResult

    started = time.monotonic()
    config = potency_config(tmp_path)
    crash_app.config.update(config)
    harness = Harness(crash_app, engine_name, tmp_path, config)
    with crash_app.app_context():
        users = _users()
        measured = scoring_run(users)
        target = scoring_run(users)
        attempt = {"started_at": utcnow() - dt.timedelta(seconds=1), "audit_head": audit_head()}
        _db.session.remove()
    cache = str(tmp_path / "field-scores.pickle")
    exitcode, log = harness.child("score_potency_plate", {"run_id": measured, "score_cache": cache})
    assert exitcode == 0, f"the full scoring failed in the child (exit {exitcode})"
    with crash_app.app_context():
        full = potency_state(measured, {"started_at": attempt["started_at"], "audit_head": 0})
        expected_results = sorted(_db.session.execute(select(LotResult.lot_identifier, LotResult.ratio,
                                                             LotResult.percent_inhibition)
                                                      .where(LotResult.run_id == measured)).all())
    assert full["state"] == "scored" and full["fields_done"] == full["fields_total"] == 10, full
    assert log["commits"] == full["fields_total"] + 1, "one commit per field and one for the aggregation"

    kills = []
    for point, fields, scored in potency_kill_points(log):
        with crash_app.app_context():
            run = services.get_run(target)
            if run.state.value != "scoring":  # a crashed job leaves the run in scoring: stop it, score again
                raise AssertionError(f"run is {run.state.value} before a kill")
            attempt = {"started_at": utcnow(), "audit_head": audit_head()}
            _db.session.remove()
        harness.kill("score_potency_plate", {"run_id": target, "score_cache": cache}, point)
        with crash_app.app_context():
            found = potency_state(target, attempt)
            chain = chain_ok()
            kills.append({"kill": point, "found": found, "expected_fields": fields, "expected_scored": scored,
                          "chain": chain})
            assert found["whole_fields"] and found["aggregation_all_or_nothing"], kills[-1]
            assert found["fields_done"] == fields and (found["state"] == "scored") == scored, kills[-1]
            assert chain["ok"], kills[-1]
            if not scored:  # recover as a user would: stop the stuck run with a reason, score again
                run = services.get_run(target)
                services.stop_scoring(users_now("technician"), run, "scoring worker killed (crash test)")
                services.start_scoring(users_now("technician"), services.get_run(target))
            _db.session.remove()

    with crash_app.app_context():
        results = sorted(_db.session.execute(select(LotResult.lot_identifier, LotResult.ratio,
                                                    LotResult.percent_inhibition)
                                             .where(LotResult.run_id == target)).all())
    # Scored after five crashes, the plate gives the same lot results as the run never killed.
    assert results == expected_results and results, (results, expected_results)
    record(engine_name, "score_potency_plate", {
        "full_run": statement_summary(log), "atomic_unit": "one field (score + run progress + audit), "
        "then the aggregation (lot results + validity + state scored)", "kills": kills,
        "kill_points_survived": len(kills), "lost_or_partial": 0, "seconds": time.monotonic() - started,
        "done_after_crashes": "scored; lot results equal those of the run never killed"})


def users_now(username: str):
    from labsys.auth.services import find_user

    return find_user(username)
