"""``flask perf-data``: volume data in proportion, obeying the app's invariants, with a chain
that verifies; refused on a database with real users."""
from __future__ import annotations

from sqlalchemy import func, select, text

from labsys.audit.services import Actor, verify_chain
from labsys.auth import services as auth_services
from labsys.auth.models import Signature
from labsys.auth.signatures import signature_holds
from labsys.batches.models import Batch, Vial
from labsys.extensions import db
from labsys.release.models import ReleaseDecision

LAST_EVENT_FOR_STATUS = {"quarantine": "stored", "available": "status.available", "destroyed": "status.destroyed"}


def _count(table: str) -> int:
    return db.session.scalar(text(f"SELECT count(*) FROM {table}"))


def _run(app, *args):
    return app.test_cli_runner().invoke(args=["perf-data", *args])


def test_perf_data_fills_in_proportion_and_the_chain_verifies(app):
    result = _run(app, "--vials", "500")
    assert result.exit_code == 0, result.output
    # The demo set brings its own rows; the generated ones come on top, in proportion.
    demo = {"vials": 40, "batches": 3, "potency_runs": 1, "trial_patients": 8}
    assert _count("vials") - demo["vials"] == 490  # 50 batches of 10, the newest still in process
    assert _count("batches") - demo["batches"] == 50
    assert _count("potency_runs") - demo["potency_runs"] == 5
    assert _count("trial_patients") - demo["trial_patients"] == 10
    assert _count("audit_entries") >= 10 * 500
    outcome = verify_chain(db.session)
    assert outcome.ok, outcome.problem
    assert outcome.entries == _count("audit_entries")


def test_vial_states_match_their_last_custody_event_and_positions(app):
    assert _run(app, "--vials", "500").exit_code == 0
    rows = db.session.execute(text(
        "SELECT v.status, v.box_id, (SELECT e.event_type FROM vial_events e WHERE e.vial_id = v.id "
        "ORDER BY e.at DESC, e.id DESC LIMIT 1) FROM vials v JOIN batches b ON b.id = v.batch_id "
        "JOIN cords c ON c.id = b.cord_id JOIN donors d ON d.id = c.donor_id WHERE d.code LIKE 'D-P%'")).all()
    assert len(rows) == 490
    for status, box_id, last_event in rows:
        assert last_event == LAST_EVENT_FOR_STATUS[status]
        assert (box_id is not None) == (status in ("quarantine", "available", "allocated"))
    # No two vials share a position.
    assert db.session.scalar(text(
        "SELECT count(*) FROM (SELECT box_id, row, \"column\" FROM vials WHERE box_id IS NOT NULL "
        "GROUP BY box_id, row, \"column\" HAVING count(*) > 1) AS d")) == 0


def test_released_and_rejected_lots_have_signed_decisions_that_hold(app):
    assert _run(app, "--vials", "500").exit_code == 0
    decided = list(db.session.scalars(select(Batch).where(Batch.status.in_(["released", "rejected"]))))
    assert len(decided) >= 40
    decisions = {d.batch_id: d for d in db.session.scalars(select(ReleaseDecision))}
    for batch in decided:
        decision = decisions[batch.id]
        assert decision.decision.value == batch.status.value
        signature = db.session.scalar(select(Signature).where(
            Signature.entity_type == "release_decisions", Signature.entity_id == str(decision.id)))
        assert signature is not None and signature_holds(signature, decision)
        # The head recorded at signing is an entry of the chain.
        assert db.session.scalar(text("SELECT count(*) FROM audit_entries WHERE hash = :h"),
                                 {"h": decision.chain_head_hash}) == 1
    available = db.session.scalar(select(func.count(Vial.id)).join(Batch).where(
        Vial.status == "available", Batch.status != "released"))
    assert available == 0


def test_rows_added_by_the_app_after_perf_data_get_fresh_ids(app, demo_users):
    assert _run(app, "--vials", "100").exit_code == 0
    token, secret = auth_services.create_api_token(demo_users["pharmacist"], "after perf-data")
    assert token.id and secret.startswith("lsk_")
    auth_services.create_user(Actor.system("test"), "newcomer", "New Comer", ["technician"])
    assert verify_chain(db.session).ok


def test_perf_data_refuses_a_database_with_real_users_unless_forced(app, demo_users):
    auth_services.create_user(Actor.system("test"), "realuser", "Real User", ["technician"])
    refused = _run(app, "--vials", "100")
    assert refused.exit_code != 0
    assert "realuser" in refused.output and "--force" in refused.output
    assert _count("vials") == 0
    forced = _run(app, "--vials", "100", "--force")
    assert forced.exit_code == 0, forced.output
    assert _count("vials") > 0
