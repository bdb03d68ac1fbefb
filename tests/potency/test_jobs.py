"""The scoring job: Huey queue (SQLite storage), progress as fields finish, a process pool over
fields, failures reported per field, a job that cannot start returns the run to draft."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.potency import jobs, services
from labsys.potency.models import FieldScore
from labsys.potency.scoring import FieldOutcome
from labsys.potency.states import RunState
from tests.potency.app_support import potency_config  # noqa: F401  (autouse)
from tests.potency.app_support import layout_files, make_run


def _ready_run(demo_users, files=None):
    tech = demo_users["technician"]
    run = make_run(tech)
    services.upload_images(tech, run, files if files is not None else layout_files())
    return run


def test_a_run_queued_on_sqlite_huey_is_scored_by_the_consumer(app, db, demo_users, tmp_path):
    app.config["POTENCY_HUEY_IMMEDIATE"] = False
    app.extensions.pop("potency_huey", None)
    run = _ready_run(demo_users)
    services.start_scoring(demo_users["technician"], run)
    jobs.enqueue_scoring(run.id)
    huey, _task = jobs.get_huey(app)
    assert type(huey).__name__ == "SqliteHuey" and (tmp_path / "huey.db").exists()
    assert huey.pending_count() == 1
    assert services.get_run(run.id).state == RunState.SCORING
    task = huey.dequeue()
    outcome = huey.execute(task)  # what the consumer does, in this process
    assert outcome == {"run_id": run.id, "fields": 10, "failed": 0}, huey.result(task.id)
    db.session.rollback()  # end the test's read snapshot: the job wrote in its own session
    run = services.get_run(run.id)
    assert run.state == RunState.SCORED and run.fields_done == 10 and huey.pending_count() == 0


def test_redis_is_used_when_the_huey_url_says_so(app):
    app.config["HUEY_URL"] = "redis://127.0.0.1:6390/0"
    app.extensions.pop("potency_huey", None)
    huey, _task = jobs.get_huey(app)
    assert type(huey).__name__ == "RedisHuey"
    app.extensions.pop("potency_huey", None)


def test_progress_advances_field_by_field_and_is_served_as_json(app, db, demo_users, login_as, monkeypatch):
    run = _ready_run(demo_users)
    client = login_as("technician")
    services.start_scoring(demo_users["technician"], run)
    seen = []
    original = services.record_field_outcome

    def spy(run_id, outcome):
        stored = original(run_id, outcome)
        if not seen:  # after the first field, ask the progress endpoint like the browser does
            seen.append(client.get(f"/api/potency/runs/{run_id}/progress").get_json())
        else:
            seen.append(services.get_run(run_id).fields_done)
        return stored

    monkeypatch.setattr(services, "record_field_outcome", spy)
    jobs.score_run(run.id)
    assert seen[0] == {"run_id": run.id, "state": "scoring", "fields_total": 10, "fields_done": 1,
                       "fields_failed": 0, "percent": 10, "finished": False}
    assert seen[1:] == list(range(2, 11))


def test_fields_are_scored_in_a_pool_of_two_processes(app, db, demo_users):
    app.config["POTENCY_SCORING_PROCESSES"] = 2
    run = _ready_run(demo_users, layout_files()[:4])
    services.start_scoring(demo_users["technician"], run)
    summary = jobs.score_run(run.id)
    assert summary == {"run_id": run.id, "fields": 4, "failed": 0}
    results = db.session.scalars(select(FieldScore)).all()
    assert len(results) == 4 and all(r.status == "scored" and r.cell_count > 20 for r in results)


def test_a_missing_image_file_fails_its_field_and_the_run_still_finishes(app, db, demo_users):
    run = _ready_run(demo_users)
    image = run.wells[0].images[0]
    services.image_store().path_for(image.sha256).unlink()
    services.start_scoring(demo_users["technician"], run)
    summary = jobs.score_run(run.id)
    assert summary["failed"] == 1
    failed = db.session.scalar(select(FieldScore).where(FieldScore.status == "failed"))
    assert failed.image_id == image.id and "FileNotFoundError" in failed.error
    run = services.get_run(run.id)
    assert run.state == RunState.SCORED and run.valid is False


def test_a_job_that_cannot_start_returns_the_run_to_draft_with_the_reason_audited(app, db, demo_users, monkeypatch):
    run = _ready_run(demo_users)
    services.start_scoring(demo_users["technician"], run)

    def broken(*args, **kwargs):
        raise RuntimeError("parameter store offline")

    monkeypatch.setattr(services, "resolve_parameter_set", broken)
    with pytest.raises(RuntimeError):
        jobs.score_run(run.id)
    assert services.get_run(run.id).state == RunState.DRAFT
    event = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.scoring.failed"))
    assert "parameter store offline" in event.new_values


def test_a_job_for_a_run_not_in_scoring_does_nothing(db, demo_users):
    run = _ready_run(demo_users, layout_files()[:1])
    assert jobs.score_run(run.id)["skipped"] == "run is draft"
    assert db.session.scalar(select(FieldScore)) is None


def test_an_outcome_for_a_failed_field_is_counted_as_failed(db, demo_users):
    run = _ready_run(demo_users, layout_files()[:2])
    services.start_scoring(demo_users["technician"], run)
    image = run.wells[0].images[0]
    services.record_field_outcome(run.id, FieldOutcome(image_id=image.id, ok=False, error="ValueError: bad"))
    run = services.get_run(run.id)
    assert (run.fields_done, run.fields_failed, run.progress_percent) == (1, 1, 50)


def test_a_stuck_run_can_be_stopped_with_a_reason_and_its_job_then_stops(app, db, demo_users, login_as):
    run = _ready_run(demo_users)
    services.start_scoring(demo_users["technician"], run)
    client = login_as("technician")
    page = client.get(f"/potency/{run.id}").get_data(as_text=True)
    assert "Stop scoring" in page
    client.post_form(f"/potency/{run.id}/stop-scoring", {"reason": ""}, token_from=f"/potency/{run.id}")
    assert services.get_run(run.id).state == RunState.SCORING  # no reason, nothing changed
    response = client.post_form(f"/potency/{run.id}/stop-scoring", {"reason": "Worker host rebooted"},
                                token_from=f"/potency/{run.id}")
    assert response.status_code == 302
    assert services.get_run(run.id).state == RunState.DRAFT
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.scoring.stop"))
    assert entry.reason == "Worker host rebooted"
    assert jobs.score_run(run.id) == {"run_id": run.id, "skipped": "run is draft"}
    image = run.wells[0].images[0]
    assert services.record_field_outcome(run.id, FieldOutcome(image_id=image.id, ok=False, error="late")) is False
    assert db.session.scalar(select(FieldScore)) is None
