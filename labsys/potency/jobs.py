"""The scoring job on Huey: SQLite storage under instance/ by default, Redis when
``LABSYS_HUEY_URL`` starts with redis://. Scoring a run spreads its fields over a process pool
(two processes by default: both cores) and records each field as it finishes, so the run page
can show live progress. A field that cannot be scored is recorded as failed, not fatal."""
from __future__ import annotations

import multiprocessing
import weakref
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup, with_appcontext
from huey import RedisHuey, SqliteHuey
from huey.api import Huey

from labsys.potency.scoring import FieldOutcome, score_stored_field

# The app a consumer thread without an app context scores with (weak: tests build many apps).
_LAST_APP: "weakref.ref[Flask] | None" = None


def register(app: Flask) -> None:
    global _LAST_APP
    _LAST_APP = weakref.ref(app)


def get_huey(app: Flask) -> tuple[Huey, object]:
    """The app's Huey instance and its scoring task, created on first use from the config."""
    existing = app.extensions.get("potency_huey")
    if existing is not None:
        return existing
    url = app.config.get("HUEY_URL") or ""
    immediate = bool(app.config.get("POTENCY_HUEY_IMMEDIATE"))
    if url.startswith("redis://"):
        huey: Huey = RedisHuey("labsys-potency", url=url, immediate=immediate)
    else:
        filename = app.config.get("POTENCY_HUEY_FILE") or str(Path(app.instance_path) / "huey.db")
        huey = SqliteHuey("labsys-potency", filename=filename, immediate=immediate)
    task = huey.task(name="potency.score_run")(_score_run_task)
    app.extensions["potency_huey"] = (huey, task)
    return huey, task


def enqueue_scoring(run_id: int) -> None:
    """Queue the scoring of a run (runs at once in immediate mode)."""
    _, task = get_huey(current_app._get_current_object())
    task(run_id)


def _task_app() -> Flask:
    if has_app_context():
        return current_app._get_current_object()
    app = _LAST_APP() if _LAST_APP is not None else None
    if app is None:
        raise RuntimeError("no labsys app is registered for the potency jobs")
    return app


def _score_run_task(run_id: int) -> dict:
    app = _task_app()
    with app.app_context():  # its own database session, whoever queued the job
        return score_run(run_id)


def score_run(run_id: int) -> dict:
    """Score every included field of a run in the scoring state, then aggregate."""
    from labsys.extensions import db
    from labsys.potency import services
    from labsys.potency.states import RunState

    try:
        run = services.get_run(run_id)
        if run.state != RunState.SCORING:
            return {"run_id": run_id, "skipped": f"run is {run.state.value}"}
        params = services.resolve_parameter_set(run.parameter_set_name, run.parameter_set_version)
        store = services.image_store()
        max_pixels = int(current_app.config["POTENCY_MAX_IMAGE_PIXELS"])
        work = [(image.id, str(store.path_for(image.sha256)), image.original_filename, run.pixel_size_um,
                 params.to_dict(), run.image_channel, max_pixels) for image in services.included_images(run)]
        processes = int(current_app.config.get("POTENCY_SCORING_PROCESSES", 2))
        db.session.rollback()  # end the read transaction; each field is stored in its own
    except Exception as error:
        db.session.rollback()
        services.abandon_scoring(run_id, f"{type(error).__name__}: {error}")
        raise
    failed = 0
    for outcome in _outcomes(work, processes):
        failed += 0 if outcome.ok else 1
        if not services.record_field_outcome(run_id, outcome):
            return {"run_id": run_id, "stopped": True}
    services.finish_scoring(run_id)
    return {"run_id": run_id, "fields": len(work), "failed": failed}


def _outcomes(work: list[tuple], processes: int):
    """Field outcomes as they complete: in a pool of ``processes`` (spawned, so no database
    connection or lock is inherited), or in this process when processes ≤ 1."""
    if processes <= 1 or len(work) <= 1:
        for item in work:
            yield score_stored_field(*item)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = {pool.submit(score_stored_field, *item): item for item in work}
        for future in as_completed(futures):
            item = futures[future]
            try:
                yield future.result()
            except Exception as error:  # a crashed worker fails its field, not the run
                yield FieldOutcome(image_id=item[0], ok=False, error=f"worker failed: {type(error).__name__}")


jobs_cli = AppGroup("potency-jobs", help="Background jobs of the potency assay.")


@jobs_cli.command("worker")
@click.option("--workers", default=1, show_default=True, help="Consumer threads (each job uses a process pool).")
@with_appcontext
def worker_command(workers: int) -> None:
    """Run the Huey consumer that scores plates (stop with Ctrl-C)."""
    from huey.consumer import Consumer

    huey, _ = get_huey(current_app._get_current_object())
    register(current_app._get_current_object())
    Consumer(huey, workers=workers, worker_type="thread").run()
