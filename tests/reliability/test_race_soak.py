"""Race soak: several OS processes (each with its own app, engine and connections; see
tests/reliability/processes.py) run a
seeded mix of the real services against ONE database — a shared SQLite file in WAL mode, or one
PostgreSQL schema — aimed at the same records so that they contend: randomize a patient, order an
infusion, allocate vials, thaw, dispense with a witness, release or reject a lot, select it for the
trial, enter / verify / correct QC results, build new lots. A refusal with a labsys domain error is
expected under contention; any other exception (an IntegrityError, a deadlock, a stale-data
error leaking out of a service) fails the test. Afterwards the invariants are checked.

Duration: ``LABSYS_SOAK_SECONDS`` per engine (default 15, so ``make test`` stays quick; the full
soak is ``LABSYS_SOAK_SECONDS=300``); ``LABSYS_SOAK_WORKERS`` processes (default 4). Figures are
printed and written to test-artifacts/reliability/soak-<engine>.json."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from labsys.extensions import db as _db
from tests.conftest import make_app
from tests.reliability import processes, soak_worker

SOAK_SECONDS = float(os.environ.get("LABSYS_SOAK_SECONDS", "15"))
SOAK_WORKERS = int(os.environ.get("LABSYS_SOAK_WORKERS", "4"))
SOAK_SEED = int(os.environ.get("LABSYS_SOAK_SEED", "20261125"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


@pytest.mark.slow
def test_processes_racing_on_one_database_keep_every_invariant(engine_name, tmp_path, sqlite_template):
    app, cleanup = make_app(engine_name, tmp_path, sqlite_template)
    try:
        with app.app_context():
            app.extensions["labsys_release_potency"] = soak_worker.passing_potency
            setup_started = time.monotonic()
            world = soak_worker.set_up_world()
            setup_seconds = time.monotonic() - setup_started
            _db.session.remove()
        context = processes.context()
        start = context.Barrier(SOAK_WORKERS)  # the workers start together once all are ready
        specs = [{"url": app.config["SQLALCHEMY_DATABASE_URI"],
                  "engine_options": app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
                  "seed": SOAK_SEED, "worker": worker, "seconds": SOAK_SECONDS,
                  "reagent_ids": world["reagent_ids"], "out": str(tmp_path / f"worker-{worker}.json")}
                 for worker in range(SOAK_WORKERS)]
        children = [context.Process(target=soak_worker.run_worker, args=(spec, start), name=f"soak-{spec['worker']}")
                     for spec in specs]
        spawned, spawn_wall = time.monotonic(), time.time()
        for process in children:
            process.start()
        exits = {}
        for process in children:
            process.join(timeout=SOAK_SECONDS + 120)
            exits[process.name] = time.time()
        alive = [p.name for p in children if p.is_alive()]
        for process in children:
            if process.is_alive():
                process.kill()
        assert not alive, f"workers still running after the deadline: {alive}"
        assert all(p.exitcode == 0 for p in children), [(p.name, p.exitcode) for p in children]
        workers = [json.loads(Path(spec["out"]).read_text()) for spec in specs]
        for worker in workers:
            worker["timeline"] = {k: round(v - spawn_wall, 1) for k, v in
                                  {**worker["timeline"], "exited": exits[f"soak-{worker['worker']}"]}.items()}
        joined = time.monotonic()
        with app.app_context():
            invariants = soak_worker.check_invariants(world["baseline"], workers)
            _db.session.remove()
        phases = {"setup": setup_seconds, "workers": joined - spawned, "invariants": time.monotonic() - joined}
    finally:
        cleanup()

    figures = _figures(engine_name, workers, invariants, phases)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"soak-{engine_name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    _print(figures)
    failures = [f for w in workers for f in w["failures"]]
    assert not failures, "exceptions other than labsys domain errors:\n" + "\n".join(
        f"[{f['operation']}] {f['traceback']}" for f in failures[:5])
    broken = {name: result for name, result in invariants.items() if not result["ok"]}
    assert not broken, json.dumps(broken, indent=1, default=str)
    total = figures["totals"]
    # The soak proves something only if the processes really did the work and really collided.
    assert total["succeeded"] >= 20 and total["refused"] >= 1, total
    for kind in ("randomize", "allocate", "thaw", "dispense", "release"):
        assert figures["succeeded"].get(kind, 0) >= 1, f"no {kind} succeeded: {figures['succeeded']}"


def _figures(engine_name, workers, invariants, phases) -> dict:
    def summed(key):
        total = Counter()
        for worker in workers:
            total.update(worker[key])
        return dict(sorted(total.items()))

    attempted, succeeded, refused, failed = summed("attempted"), summed("succeeded"), summed("refused"), summed("failed")
    return {
        "engine": engine_name, "workers": len(workers), "seconds": SOAK_SECONDS, "seed": SOAK_SEED,
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "busy_seconds_by_operation": {k: round(v, 1) for k, v in summed("seconds").items()}, "attempted": attempted, "succeeded": succeeded,
        "refused": refused, "failed": failed, "idle": summed("idle"), "refusals": summed("refusals"),
        "per_worker": [{"worker": w["worker"], "timeline": w["timeline"], "attempted": sum(w["attempted"].values()),
                        "succeeded": sum(w["succeeded"].values()), "refused": sum(w["refused"].values()),
                        "failed": sum(w["failed"].values())} for w in workers],
        "totals": {"attempted": sum(attempted.values()), "succeeded": sum(succeeded.values()),
                   "refused": sum(refused.values()), "failed": sum(failed.values())},
        "invariants": invariants,
        "failures": [f for w in workers for f in w["failures"]][:20],
    }


def _print(figures: dict) -> None:
    print(f"\nrace soak on {figures['engine']}: {figures['workers']} processes × {figures['seconds']:.0f} s "
          f"(phases {figures['phase_seconds']})")
    print(f"  {'operation':<18}{'attempted':>10}{'succeeded':>10}{'refused':>9}{'failed':>8}")
    for kind in sorted(figures["attempted"]):
        print(f"  {kind:<18}{figures['attempted'][kind]:>10}{figures['succeeded'].get(kind, 0):>10}"
              f"{figures['refused'].get(kind, 0):>9}{figures['failed'].get(kind, 0):>8}")
    total = figures["totals"]
    print(f"  {'total':<18}{total['attempted']:>10}{total['succeeded']:>10}{total['refused']:>9}{total['failed']:>8}")
    for name, result in figures["invariants"].items():
        details = {k: v for k, v in result.items() if k != "ok" and v not in ([], None)}
        print(f"  {'PASS' if result['ok'] else 'FAIL'} {name} {json.dumps(details, default=str)[:200]}")
