"""Potency services on both engines: runs, layout, uploads, scoring, validity, approval, audit."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth.models import Signature, SignatureMeaning
from labsys.auth.signatures import authenticate_signer
from labsys.errors import InvalidTransition, RuleViolation
from labsys.potency import jobs, services
from labsys.potency.models import FieldImage, FieldScore, LotResult, PlateWell, PotencyRun
from labsys.potency.states import RunState, WellCondition
from tests.conftest import DEMO_PASSWORD
from tests.potency.app_support import potency_config  # noqa: F401  (autouse)
from tests.potency.app_support import RUN_DEFAULTS, field_tiff, layout_files, make_run, plain_tiff


def _scored_run(demo_users, seed=100, **overrides):
    tech = demo_users["technician"]
    run = make_run(tech, **overrides)
    services.upload_images(tech, run, layout_files(seed=seed))
    services.start_scoring(tech, run)
    jobs.score_run(run.id)
    return services.get_run(run.id)


def _sign(user, meaning):
    return authenticate_signer(user, user.username, DEMO_PASSWORD, meaning, None)


def test_a_new_run_is_a_draft_with_its_lots_and_an_audit_entry(db, demo_users):
    run = make_run(demo_users["technician"])
    assert run.state == RunState.DRAFT and run.code.startswith("BV2-20261124-")
    assert run.lots_under_test == ["LOT-A", "LOT-B"] and run.reference_lot == "LOT-REF"
    assert run.parameter_set_name == "bv2-default-v1"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.run.create",
                                                       AuditEntry.entity_type == "potency_runs"))
    assert entry is not None and json.loads(entry.new_values)["lps_lot"] == "LPS-T1"
    assert len(run.wells) == 10


def test_a_run_with_bad_values_is_refused_with_every_reason_and_nothing_written(db, demo_users):
    with pytest.raises(RuleViolation) as refused:
        services.create_run(demo_users["technician"], **{**RUN_DEFAULTS, "plate_format": 12, "lps_ng_per_ml": 0,
                                                          "test_lots": "", "reference_lot": ""})
    assert {r.split(":")[0] for r in refused.value.reasons} == {"plate_format", "lps_ng_per_ml", "test_lots"}
    assert db.session.scalar(select(PotencyRun)) is None


def test_a_layout_with_an_unknown_lot_or_missing_ratio_is_refused_whole(db, demo_users):
    from labsys.potency.services import WellAssignment

    run = make_run(demo_users["technician"], layout={})
    with pytest.raises(RuleViolation) as refused:
        services.save_layout(demo_users["technician"], run, {
            "A01": WellAssignment(WellCondition.LPS),
            "B01": WellAssignment(WellCondition.TEST, "LOT-X", "1:10"),
            "B02": WellAssignment(WellCondition.TEST, "LOT-A", "ten"),
            "H12": WellAssignment(WellCondition.LPS)})
    assert len(refused.value.reasons) == 3
    assert db.session.scalar(select(PlateWell)) is None


def test_zip_upload_stores_images_content_addressed(app, db, demo_users):
    run = make_run(demo_users["technician"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plate/B03_f2.tif", field_tiff(0.5, 1))
        archive.writestr("A01_f1.tif", field_tiff(0.15, 2))
    created = services.upload_images(demo_users["technician"], run, [("plate.zip", buffer.getvalue())])
    assert sorted((i.plate_well.well, i.field_number) for i in created) == [("A01", 1), ("B03", 2)]
    store = services.image_store()
    for image in created:
        assert store.path_for(image.sha256).read_bytes() == (field_tiff(0.5, 1) if image.field_number == 2
                                                               else field_tiff(0.15, 2))
        assert image.bit_depth == 16 and image.width == 512


@pytest.mark.parametrize("name, data, expected", [
    ("A01_f1.tif", b"II*\x00garbage", "corrupt"),
    ("A01_f1.tif", b"", "empty"),
    ("A01_f1.png", b"not an image at all", "not a TIFF or PNG"),
    ("A01_f1.tif", plain_tiff(dtype=np.float32), "float32"),
    ("A01_f1.tif", plain_tiff(shape=(2, 64, 64)), "2 frames"),
    ("A01_f1.tif", plain_tiff(shape=(600, 600)), "exceed the limit"),
    ("notes.tif", plain_tiff(), "name it by well and field"),
    ("H09_f1.tif", plain_tiff(), "not in the plate layout"),
])
def test_bad_files_are_refused_with_a_clear_reason_and_nothing_is_stored(app, db, demo_users, tmp_path, name, data,
                                                                          expected):
    app.config["POTENCY_MAX_IMAGE_PIXELS"] = 300_000
    run = make_run(demo_users["technician"])
    good = ("A02_f1.tif", field_tiff(0.15, 3))
    with pytest.raises(RuleViolation) as refused:
        services.upload_images(demo_users["technician"], run, [good, (name, data)])
    assert any(expected in reason for reason in refused.value.reasons), refused.value.reasons
    assert db.session.scalar(select(FieldImage)) is None
    images_dir = tmp_path / "images"
    assert not images_dir.exists() or not any(p.is_file() for p in images_dir.rglob("*"))


def test_a_zip_bomb_and_an_archive_of_thousands_of_entries_are_refused(app, db, demo_users):
    app.config["POTENCY_MAX_ZIP_ENTRIES"] = 50
    run = make_run(demo_users["technician"])
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("A01_f1.tif", b"\x00" * 20_000_000)
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as archive:
        for n in range(51):
            archive.writestr(f"A01_f{n + 1}.tif", b"x")
    for payload, words in ((bomb, "zip bomb"), (many, "51 entries")):
        with pytest.raises(RuleViolation) as refused:
            services.upload_images(demo_users["technician"], run, [("plate.zip", payload.getvalue())])
        assert any(words in r for r in refused.value.reasons), refused.value.reasons
    assert db.session.scalar(select(FieldImage)) is None


def test_a_field_uploaded_twice_is_refused(db, demo_users):
    run = make_run(demo_users["technician"])
    services.upload_images(demo_users["technician"], run, [("A01_f1.tif", field_tiff(0.15, 4))])
    with pytest.raises(RuleViolation) as refused:
        services.upload_images(demo_users["technician"], run, [("a1_f1.tif", field_tiff(0.15, 5))])
    assert "already has an image" in refused.value.reasons[0]


def test_scoring_computes_field_well_and_lot_results_and_a_valid_run(db, demo_users):
    run = _scored_run(demo_users)
    assert run.state == RunState.SCORED and run.fields_done == run.fields_total == 10 and run.fields_failed == 0
    scores = db.session.scalars(select(FieldScore)).all()
    assert len(scores) == 10 and all(s.status == "scored" and s.algorithm_version for s in scores)
    assert all(s.parameter_set_name == "bv2-default-v1" and "numpy" in s.library_versions for s in scores)
    lots = {(r.lot_identifier, r.ratio): r for r in run.lot_results}
    lot_a, lot_b, ref = lots[("LOT-A", "all")], lots[("LOT-B", "all")], lots[("LOT-REF", "all")]
    # Truth: LOT-A (0.35) inhibits more than LOT-B (0.50) between LPS 0.70 and unstimulated 0.15.
    assert 40 < lot_a.percent_inhibition < 85 and 10 < lot_b.percent_inhibition < 50
    assert lot_a.percent_inhibition > lot_b.percent_inhibition
    expected = 100 * (run.lps_score - lot_a.score) / (run.lps_score - run.unstim_score)
    assert lot_a.percent_inhibition == pytest.approx(expected)
    assert lot_a.relative_potency == pytest.approx(lot_a.percent_inhibition / ref.percent_inhibition)
    assert run.valid is True, run.validity
    assert run.z_prime is not None and run.z_prime >= 0.4


def test_a_failed_image_is_reported_not_fatal(app, db, demo_users):
    tech = demo_users["technician"]
    run = make_run(tech)
    created = services.upload_images(tech, run, layout_files())
    broken = created[0]
    path = services.image_store().path_for(broken.sha256)
    path.write_bytes(b"II*\x00" + b"\x00" * 64)  # the stored file is damaged after upload
    services.start_scoring(tech, run)
    jobs.score_run(run.id)
    run = services.get_run(run.id)
    assert run.state == RunState.SCORED and run.fields_failed == 1 and run.fields_done == 10
    failed = db.session.scalar(select(FieldScore).where(FieldScore.status == "failed"))
    assert failed.image_id == broken.id and "no longer matches" not in (failed.error or "") and failed.error
    assert run.valid is False
    assert any(v["rule"] == "images_scored" and not v["passed"] for v in run.validity)


def test_excluding_a_field_needs_a_reason_is_audited_and_rescores(db, demo_users):
    run = _scored_run(demo_users)
    image = db.session.scalar(select(FieldImage).join(PlateWell).where(PlateWell.well == "B01"))
    with pytest.raises(RuleViolation):
        services.exclude_field(demo_users["technician"], image, "  ")
    services.exclude_field(demo_users["qa"], image, "Out of focus")
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.field.exclude",
                                                       AuditEntry.entity_type == "potency_field_images"))
    assert entry.reason == "Out of focus" and json.loads(entry.old_values) == {"excluded": False, "exclusion_reason": None}
    run = services.get_run(run.id)
    lot_a = next(r for r in run.lot_results if r.lot_identifier == "LOT-A" and r.ratio == "all")
    assert lot_a.well_count == 1


def test_review_and_approval_are_signed_and_feed_release(db, demo_users):
    run = _scored_run(demo_users)
    qa = demo_users["qa"]
    services.review_run(_sign(qa, SignatureMeaning.REVIEWED), run)
    assert run.state == RunState.REVIEWED
    assert services.approved_potency_for_lot("LOT-A") is None
    services.approve_run(_sign(qa, SignatureMeaning.APPROVED), run)
    approved = services.approved_potency_for_lot("LOT-A")
    lot_a = next(r for r in run.lot_results if r.lot_identifier == "LOT-A" and r.ratio == "all")
    assert approved.run_id == run.id and approved.valid is True
    assert approved.percent_inhibition == pytest.approx(lot_a.percent_inhibition)
    assert approved.assay_date == run.assay_date and approved.approved_at is not None
    meanings = [s.meaning for s in db.session.scalars(select(Signature).where(Signature.entity_type == "potency_runs"))]
    assert meanings == [SignatureMeaning.REVIEWED, SignatureMeaning.APPROVED]
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.run.approve")) is not None
    assert services.approved_potency_for_lot("LOT-REF") is None
    assert services.approved_potency_for_lot("NO-SUCH-LOT") is None


def test_an_invalid_run_is_closed_as_invalid_and_cannot_be_approved(db, demo_users):
    run = _scored_run(demo_users, min_cells_per_field=500)
    assert run.valid is False
    assert any("below 500 cells" in v["message"] for v in run.validity)
    services.review_run(_sign(demo_users["qa"], SignatureMeaning.REVIEWED), run)
    assert run.state == RunState.INVALID
    with pytest.raises(RuleViolation):
        services.approve_run(_sign(demo_users["qa"], SignatureMeaning.APPROVED), run)
    assert services.approved_potency_for_lot("LOT-A") is None


def test_the_database_refuses_an_approved_state_without_validity(db, demo_users):
    from labsys.audit.services import Actor, unit_of_work
    from sqlalchemy.exc import IntegrityError

    run = make_run(demo_users["technician"], layout={})
    with pytest.raises(IntegrityError):
        with unit_of_work(Actor.system("test"), "tamper"):
            run.state = RunState.APPROVED
    db.session.rollback()


def test_calibration_proposes_a_boundary_that_needs_qa_approval(db, demo_users):
    run = _scored_run(demo_users, is_validation=True)
    qa = demo_users["qa"]
    with pytest.raises(RuleViolation):
        services.propose_parameter_set(qa, run)  # not approved yet
    services.review_run(_sign(qa, SignatureMeaning.REVIEWED), run)
    services.approve_run(_sign(qa, SignatureMeaning.APPROVED), run)
    record = services.propose_parameter_set(qa, run)
    low, high = record.evidence["unstimulated_median_area_um2"], record.evidence["lps_median_area_um2"]
    assert low < record.values["activated_min_area_um2"] < high
    assert record.values["activated_min_area_um2"] == pytest.approx((low + high) / 2, abs=0.1)
    with pytest.raises(RuleViolation):
        services.create_run(demo_users["technician"], **{**RUN_DEFAULTS, "parameter_set": f"{record.name}@{record.version}"})
    services.approve_parameter_set(_sign(qa, SignatureMeaning.APPROVED), record)
    new = services.create_run(demo_users["technician"], **{**RUN_DEFAULTS, "parameter_set": f"{record.name}@{record.version}"})
    assert (new.parameter_set_name, new.parameter_set_version) == (record.name, record.version)
    old_scores = db.session.scalars(select(FieldScore).where(FieldScore.run_id == run.id)).all()
    assert {s.parameter_set_name for s in old_scores} == {"bv2-default-v1"}


def test_state_changes_follow_the_transition_table(db, demo_users):
    run = make_run(demo_users["technician"])
    with pytest.raises(RuleViolation):
        services.review_run(_sign(demo_users["qa"], SignatureMeaning.REVIEWED), run)
    with pytest.raises(RuleViolation):
        services.start_scoring(demo_users["technician"], run)  # no images yet
    with pytest.raises(InvalidTransition):
        services.finish_scoring(run.id)


def test_control_history_flags_westgard_rules_across_runs(db, demo_users):
    from labsys.potency import rules

    runs = [_scored_run(demo_users, seed=seed) for seed in (100, 300, 500)]
    history = services.control_history()
    for key, expected in (("lps", [r.lps_score for r in runs]),
                          ("reference", [next(l.percent_inhibition for l in r.lot_results
                                              if l.role == "reference" and l.ratio == "all") for r in runs])):
        points, stats = history[key]
        assert [p.run_id for p in points] == [r.id for r in runs]
        assert [p.value for p in points] == pytest.approx(expected)
        assert stats == pytest.approx(rules.control_statistics(expected))
        assert [p.flags for p in points] == rules.westgard_flags(expected, *stats)


def test_two_reviewers_racing_on_one_run_cannot_both_change_it(app, db, demo_users):
    from labsys.errors import ConcurrentChange

    run = _scored_run(demo_users)
    # A second session changes the run after this one loaded it.
    with app.app_context():
        services.review_run(_sign(demo_users["qa2"], SignatureMeaning.REVIEWED), services.get_run(run.id))
    stale = run  # still the scored version this session read
    assert stale.state == RunState.SCORED
    with pytest.raises((ConcurrentChange, RuleViolation)):
        services.review_run(_sign(demo_users["qa"], SignatureMeaning.REVIEWED), stale)
    db.session.rollback()
    reviews = db.session.scalars(select(Signature).where(Signature.entity_type == "potency_runs")).all()
    assert len(reviews) == 1


def test_a_database_failure_after_writing_files_removes_only_unreferenced_files(app, db, demo_users, monkeypatch):
    tech = demo_users["technician"]
    run = make_run(tech)
    kept = services.upload_images(tech, run, [("A01_f1.tif", field_tiff(0.15, 41))])[0]
    store = services.image_store()

    def failing_unit_of_work(*args, **kwargs):
        raise RuntimeError("database went away")

    # Same content again (as another well's field) plus a new file; the transaction fails.
    monkeypatch.setattr(services, "unit_of_work", failing_unit_of_work)
    with pytest.raises(RuntimeError):
        services.upload_images(tech, run, [("A02_f1.tif", field_tiff(0.15, 41)), ("A03_f1.tif", field_tiff(0.7, 42))])
    monkeypatch.undo()
    assert store.exists(kept.sha256)
    import hashlib

    assert not store.exists(hashlib.sha256(field_tiff(0.7, 42)).hexdigest())
