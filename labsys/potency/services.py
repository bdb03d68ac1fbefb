"""Potency services: the only writers of runs, layouts, images, scores, approvals and
calibrated parameter sets. Each takes plain values and the acting user, checks every rule,
and commits once through ``unit_of_work``."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import Actor, record_event, unit_of_work
from labsys.auth.models import User
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.db import utcnow
from labsys.errors import ConcurrentChange, NotFound, RuleViolation
from labsys.extensions import db
from labsys.potency import rules
from labsys.potency.evaluation import RunEvaluation, evaluate_run, replicate_group_for
from labsys.potency.images import (ContentStore, UnreadableImage, check_image, parse_field_name, stream_size,
                                   unpack_zip, unsafe_name_reason)
from labsys.potency.models import (CalibratedParameterSet, FieldImage, FieldScore, LotResult, PlateWell,
                                   PotencyRun)
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, PARAMETER_SETS, ParameterSet
from labsys.potency.scoring import FieldOutcome
from labsys.potency.states import ParameterSetState, RunState, WellCondition, check_run_transition

@contextlib.contextmanager
def _changing(actor: Actor, action: str, reason: str | None = None, *, reason_required: bool = False):
    """``unit_of_work`` that turns a lost race on a versioned record into ConcurrentChange (409)."""
    try:
        with unit_of_work(actor, action, reason, reason_required=reason_required) as session:
            yield session
    except StaleDataError:
        raise ConcurrentChange("Someone else changed this record first; reload and try again.") from None


RATIO = re.compile(r"^\d+(\.\d+)?:\d+(\.\d+)?$")
SYSTEM = Actor.system("potency-scoring")


# Configuration ------------------------------------------------------------------------------

def image_store() -> ContentStore:
    root = current_app.config.get("POTENCY_IMAGE_DIR") or Path(current_app.instance_path) / "images"
    return ContentStore(root)


def _limit(name: str) -> int:
    return int(current_app.config[name])


# Parameter sets -----------------------------------------------------------------------------

def resolve_parameter_set(name: str, version: int) -> ParameterSet:
    """A built-in set, or a calibrated set QA approved; anything else is refused."""
    builtin = PARAMETER_SETS.get(name)
    if builtin is not None and builtin.version == version:
        return builtin
    record = db.session.scalar(select(CalibratedParameterSet).where(
        CalibratedParameterSet.name == name, CalibratedParameterSet.version == version))
    if record is None or record.state != ParameterSetState.APPROVED:
        raise RuleViolation(f"Parameter set {name} version {version} is not approved for use.",
                            ["parameter_set: not approved"], field="parameter_set")
    return ParameterSet.from_dict(record.values)


def usable_parameter_sets() -> list[tuple[str, int, str]]:
    """(name, version, label) of every set a new run may use."""
    choices = [(p.name, p.version, f"{p.name} v{p.version} (built-in)") for p in PARAMETER_SETS.values()]
    for record in db.session.scalars(select(CalibratedParameterSet).where(
            CalibratedParameterSet.state == ParameterSetState.APPROVED).order_by(CalibratedParameterSet.id)):
        choices.append((record.name, record.version, f"{record.name} v{record.version} (calibrated)"))
    return choices


# Runs ---------------------------------------------------------------------------------------

def get_run(run_id: int) -> PotencyRun:
    run = db.session.get(PotencyRun, run_id)
    if run is None:
        raise NotFound(f"No potency run {run_id}.")
    return run


def _next_code(assay_date: dt.date) -> str:
    prefix = f"BV2-{assay_date:%Y%m%d}-"
    count = db.session.scalar(select(func.count()).select_from(PotencyRun).where(PotencyRun.code.like(prefix + "%")))
    return f"{prefix}{(count or 0) + 1:02d}"


def _split_lots(text: str | Iterable[str]) -> list[str]:
    items = re.split(r"[,\n;]+", text) if isinstance(text, str) else list(text)
    seen: list[str] = []
    for item in items:
        item = item.strip()
        if item and item not in seen:
            seen.append(item)
    return seen


def create_run(user: User, *, assay_date: dt.date, bv2_passage: int, lps_lot: str, lps_ng_per_ml: float,
               test_lots: str | Iterable[str], reference_lot: str | None, plate_format: int,
               parameter_set: str | None = None, pixel_size_um: float = 0.65, image_channel: int | None = None,
               measure: str = "activation_fraction", is_validation: bool = False,
               min_cells_per_field: int = 30, max_replicate_cv_percent: float = 20.0, min_z_prime: float = 0.4,
               reference_min_inhibition: float | None = None, reference_max_inhibition: float | None = None,
               notes: str | None = None) -> PotencyRun:
    """Record a new run in draft. Every refused value is reported at once."""
    lots = _split_lots(test_lots)
    reasons = []
    if plate_format not in rules.PLATE_GEOMETRY:
        reasons.append("plate_format: must be 24, 48 or 96")
    if bv2_passage is None or bv2_passage < 0:
        reasons.append("bv2_passage: must be 0 or more")
    if not lps_ng_per_ml or lps_ng_per_ml <= 0:
        reasons.append("lps_ng_per_ml: must be above 0")
    if not lps_lot or not lps_lot.strip():
        reasons.append("lps_lot: required")
    if not lots and not is_validation:
        reasons.append("test_lots: name at least one MSC lot under test")
    reference = reference_lot.strip() if reference_lot and reference_lot.strip() else None
    if reference and reference in lots:
        reasons.append("reference_lot: the reference lot cannot also be under test")
    if measure not in rules.MEASURES:
        reasons.append("measure: unknown measure")
    if pixel_size_um is None or pixel_size_um <= 0:
        reasons.append("pixel_size_um: must be above 0")
    if (reference_min_inhibition is not None and reference_max_inhibition is not None
            and reference_min_inhibition > reference_max_inhibition):
        reasons.append("reference_max_inhibition: must not be below the lower limit")
    name, _, version = (parameter_set or f"{DEFAULT_PARAMETER_SET_NAME}@1").partition("@")
    try:
        params = resolve_parameter_set(name, int(version or 1))
    except (RuleViolation, ValueError):
        reasons.append("parameter_set: not an approved parameter set")
        params = None
    if reasons:
        raise RuleViolation("The run was not recorded.", reasons)
    assert params is not None
    with unit_of_work(actor_of(user), "potency.run.create"):
        run = PotencyRun(
            code=_next_code(assay_date), assay_date=assay_date, operator_id=user.id, bv2_passage=bv2_passage,
            lps_lot=lps_lot.strip(), lps_ng_per_ml=float(lps_ng_per_ml), test_lots=lots, reference_lot=reference,
            plate_format=plate_format, pixel_size_um=float(pixel_size_um), image_channel=image_channel,
            measure=measure, is_validation=is_validation, parameter_set_name=params.name,
            parameter_set_version=params.version, min_cells_per_field=min_cells_per_field,
            max_replicate_cv_percent=max_replicate_cv_percent, min_z_prime=min_z_prime,
            reference_min_inhibition=reference_min_inhibition, reference_max_inhibition=reference_max_inhibition,
            notes=notes or None, state=RunState.DRAFT)
        db.session.add(run)
    return run


def _require_state(run: PotencyRun, *states: RunState, doing: str) -> None:
    if run.state not in states:
        raise RuleViolation(f"A {run.state.value} run cannot {doing}.",
                            [f"state: {run.state.value} (needs {', '.join(s.value for s in states)})"])


@dataclass(frozen=True)
class WellAssignment:
    condition: WellCondition
    lot_identifier: str | None = None
    ratio: str | None = None


def save_layout(user: User, run: PotencyRun, assignments: dict[str, WellAssignment]) -> PotencyRun:
    """Set the condition, lot and MSC:BV2 ratio of the plate's wells (draft runs only). Wells not
    named keep what they had; every refused well is reported and nothing is saved."""
    _require_state(run, RunState.DRAFT, doing="change its layout")
    reasons = []
    cleaned: dict[str, WellAssignment] = {}
    for raw_name, assignment in assignments.items():
        well = rules.normalise_well(raw_name, run.plate_format)
        if well is None:
            reasons.append(f"{raw_name}: not a well of a {run.plate_format}-well plate")
            continue
        lot = (assignment.lot_identifier or "").strip() or None
        ratio = (assignment.ratio or "").strip() or None
        if assignment.condition == WellCondition.TEST:
            if lot not in run.lots_under_test:
                reasons.append(f"{well}: choose one of the lots under test")
        elif assignment.condition == WellCondition.REFERENCE:
            if not run.reference_lot:
                reasons.append(f"{well}: the run has no reference lot")
            lot = run.reference_lot
        else:
            lot, ratio = None, None
        if assignment.condition in (WellCondition.TEST, WellCondition.REFERENCE):
            if ratio is None or not RATIO.match(ratio):
                reasons.append(f"{well}: give the MSC:BV2 ratio as e.g. 1:10")
        cleaned[well] = WellAssignment(assignment.condition, lot, ratio)
    if reasons:
        raise RuleViolation("The layout was not saved.", reasons)
    existing = {w.well: w for w in run.wells}
    with _changing(actor_of(user), "potency.layout.save"):
        for well, assignment in cleaned.items():
            group = replicate_group_for(assignment.condition, assignment.lot_identifier, assignment.ratio)
            row = existing.get(well)
            if row is None:
                if assignment.condition == WellCondition.EMPTY:
                    continue
                db.session.add(PlateWell(run_id=run.id, well=well, condition=assignment.condition,
                                         lot_identifier=assignment.lot_identifier, ratio=assignment.ratio,
                                         replicate_group=group))
            else:
                row.condition = assignment.condition
                row.lot_identifier = assignment.lot_identifier
                row.ratio = assignment.ratio
                row.replicate_group = group
    db.session.expire(run)
    return run


def upload_images(user: User, run: PotencyRun, files: list[tuple[str, bytes | BinaryIO]], *,
                  well: str | None = None, field_number: int | None = None) -> list[FieldImage]:
    """Check and store field images. Names give well and field (``B03_f2.tif``); a zip archive is
    unpacked (bombs and huge archives refused). A single file may instead name its well and
    field explicitly. Every problem is reported, and if there is any, NOTHING is stored.

    Each file is bytes or a seekable stream (an upload spooled to disk): its size is checked
    before it is read, so an oversized file never enters memory."""
    _require_state(run, RunState.DRAFT, doing="take images")
    max_image_bytes = _limit("POTENCY_MAX_IMAGE_MB") * 1024 * 1024
    reasons: list[str] = []
    expanded: list[tuple[str, bytes]] = []
    for filename, data in files:
        unsafe = unsafe_name_reason(filename)
        if unsafe:
            reasons.append(unsafe)
        elif filename.lower().endswith(".zip"):
            try:
                expanded.extend(unpack_zip(data, _limit("POTENCY_MAX_ZIP_ENTRIES"),
                                           _limit("POTENCY_MAX_ZIP_MB") * 1024 * 1024,
                                           max_member_bytes=max_image_bytes))
            except UnreadableImage as refused:
                reasons.append(f"{filename}: {refused}")
        elif (size := stream_size(data)) > max_image_bytes:
            reasons.append(f"{filename}: {size} bytes exceed the limit of {max_image_bytes}")
        else:
            expanded.append((filename, data if isinstance(data, bytes) else data.read()))
    if not expanded and not reasons:
        reasons.append("files: choose at least one image or zip archive")
    wells = {w.well: w for w in run.wells if w.condition != WellCondition.EMPTY}
    taken = {(image.plate_well.well, image.field_number) for w in run.wells for image in w.images}
    planned: dict[tuple[str, int], tuple[str, object]] = {}
    for filename, data in expanded:
        if well and field_number and len(expanded) == 1:
            target = (rules.normalise_well(well, run.plate_format) or well, int(field_number))
        else:
            parsed = parse_field_name(filename)
            if parsed is None:
                reasons.append(f"{filename}: name it by well and field, e.g. B03_f2.tif")
                continue
            target = (rules.normalise_well(parsed[0], run.plate_format) or parsed[0], parsed[1])
        if target[0] not in wells:
            reasons.append(f"{filename}: well {target[0]} is not in the plate layout")
            continue
        if target[1] < 1:
            reasons.append(f"{filename}: field numbers start at 1")
            continue
        if target in taken:
            reasons.append(f"{filename}: {target[0]} field {target[1]} already has an image")
            continue
        if target in planned:
            reasons.append(f"{filename}: {target[0]} field {target[1]} appears twice in this upload")
            continue
        try:
            checked = check_image(data, filename, max_image_bytes,
                                  _limit("POTENCY_MAX_IMAGE_PIXELS"), run.image_channel)
        except UnreadableImage as refused:
            reasons.append(str(refused))
            continue
        planned[target] = (filename, checked)
    if reasons:
        raise RuleViolation("No image was stored.", reasons, field="files")
    store = image_store()
    written: list[str] = []
    created: list[FieldImage] = []
    try:
        for _target, (_name, checked) in planned.items():
            sha, new = store.put(checked.data)  # type: ignore[attr-defined]
            if new:
                written.append(sha)
        with unit_of_work(actor_of(user), "potency.image.upload"):
            for (well_name, number), (filename, checked) in sorted(planned.items()):
                image = FieldImage(run_id=run.id, well_id=wells[well_name].id, field_number=number,
                                   sha256=checked.sha256, original_filename=Path(filename).name[:255],  # type: ignore[attr-defined]
                                   byte_size=len(checked.data), width=checked.width,  # type: ignore[attr-defined]
                                   height=checked.height, bit_depth=checked.bit_depth,  # type: ignore[attr-defined]
                                   channel=checked.channel, uploaded_by_id=user.id)  # type: ignore[attr-defined]
                db.session.add(image)
                created.append(image)
    except BaseException:
        # Undo this request's new files, unless another upload of the same content now uses them.
        db.session.rollback()
        for sha in written:
            if db.session.scalar(select(FieldImage.id).where(FieldImage.sha256 == sha).limit(1)) is None:
                store.remove_new(sha)
        raise
    return created


def exclude_field(user: User, image: FieldImage, reason: str) -> FieldImage:
    """Leave a field out of the scores; only with a reason, which the audit trail keeps. A scored
    run's results and validity are recomputed at once."""
    run = get_run(image.run_id)
    _require_state(run, RunState.DRAFT, RunState.SCORED, doing="exclude fields")
    if image.excluded:
        raise RuleViolation("This field is already excluded.", ["field: already excluded"])
    with _changing(actor_of(user), "potency.field.exclude", reason=reason, reason_required=True):
        image.excluded = True
        image.exclusion_reason = reason.strip()
        db.session.flush()
        if run.state == RunState.SCORED:
            db.session.expire(run)
            _store_evaluation(run)
    return image


# Scoring ------------------------------------------------------------------------------------

def included_images(run: PotencyRun) -> list[FieldImage]:
    return [image for well in run.wells if well.condition != WellCondition.EMPTY
            for image in well.images if not image.excluded]


def start_scoring(user: User, run: PotencyRun) -> PotencyRun:
    """Move the run to scoring and reset its progress; the caller enqueues the job."""
    _require_state(run, RunState.DRAFT, RunState.SCORED, doing="be scored")
    images = included_images(run)
    if not images:
        raise RuleViolation("There is no image to score.", ["images: upload field images first"])
    resolve_parameter_set(run.parameter_set_name, run.parameter_set_version)
    with _changing(actor_of(user), "potency.scoring.start"):
        check_run_transition(run.state, RunState.SCORING)
        run.state = RunState.SCORING
        run.fields_total = len(images)
        run.fields_done = 0
        run.fields_failed = 0
    return run


def record_field_outcome(run_id: int, outcome: FieldOutcome) -> bool:
    """Store one field's score (or failure) and advance the run's progress. Returns False (and
    stores nothing) when the run is no longer being scored (its scoring was stopped)."""
    run = get_run(run_id)
    if run.state != RunState.SCORING:
        return False
    store = image_store()
    overlay = store.put(outcome.overlay_png)[0] if outcome.overlay_png else None
    cells = store.put(outcome.cells_npz)[0] if outcome.cells_npz else None
    with unit_of_work(SYSTEM, "potency.field.score"):
        image = db.session.get(FieldImage, outcome.image_id)
        result = image.result or FieldScore(image_id=image.id, run_id=run.id)
        values = dict(
            status="scored" if outcome.ok else "failed", error=outcome.error,
            cell_count=outcome.cell_count, activated_count=outcome.activated_count,
            activation_fraction=outcome.activation_fraction,
            median_area_um2=(None if outcome.median_area_um2 is None or np.isnan(outcome.median_area_um2)
                             else outcome.median_area_um2),
            algorithm_version=outcome.algorithm_version or "-",
            parameter_set_name=run.parameter_set_name, parameter_set_version=run.parameter_set_version,
            library_versions=outcome.library_versions or {}, overlay_sha256=overlay, cells_sha256=cells,
            scored_at=utcnow())
        for key, value in values.items():
            setattr(result, key, value)
        db.session.add(result)
        run.fields_done = run.fields_done + 1
        if not outcome.ok:
            run.fields_failed = run.fields_failed + 1
    return True


def _store_evaluation(run: PotencyRun) -> RunEvaluation:
    """Write the run's lot results, control scores and validity (inside a unit of work)."""
    evaluation = evaluate_run(run)
    existing = {(r.lot_identifier, r.ratio): r for r in run.lot_results}
    for line in evaluation.lots:
        row = existing.get((line.lot_identifier, line.ratio)) or LotResult(
            run_id=run.id, lot_identifier=line.lot_identifier, ratio=line.ratio)
        row.role = line.role
        row.well_count = line.well_count
        row.score = line.score
        row.cv_percent = None if line.cv_percent is None or not np.isfinite(line.cv_percent) else line.cv_percent
        row.percent_inhibition = line.percent_inhibition
        row.relative_potency = line.relative_potency
        db.session.add(row)
    run.valid = evaluation.valid
    run.validity = evaluation.validity_json()
    run.z_prime = None if evaluation.z_prime is None or not np.isfinite(evaluation.z_prime) else evaluation.z_prime
    run.lps_score = evaluation.lps_score
    run.unstim_score = evaluation.unstim_score
    return evaluation


def finish_scoring(run_id: int) -> PotencyRun:
    """Aggregate the field scores into well, lot and run results and mark the run scored."""
    run = get_run(run_id)
    with unit_of_work(SYSTEM, "potency.scoring.finish"):
        check_run_transition(run.state, RunState.SCORED)
        _store_evaluation(run)
        run.state = RunState.SCORED
        run.scored_at = utcnow()
    return run


def abandon_scoring(run_id: int, error: str) -> None:
    """The job could not run at all: back to draft, with the reason in the audit trail."""
    run = get_run(run_id)
    with unit_of_work(SYSTEM, "potency.scoring.abandon", reason=error[:500]):
        run.state = RunState.DRAFT
        record_event(SYSTEM, "potency.scoring.failed", "potency_runs", run.id, {"error": error[:500]})


def stop_scoring(user: User, run: PotencyRun, reason: str) -> PotencyRun:
    """Return a run stuck in scoring (e.g. its worker stopped) to draft, with a reason; it can
    then be scored again. A job still running stops at its next field."""
    _require_state(run, RunState.SCORING, doing="stop scoring")
    with _changing(actor_of(user), "potency.scoring.stop", reason=reason, reason_required=True):
        check_run_transition(run.state, RunState.DRAFT)
        run.state = RunState.DRAFT
    return run


# Review and approval ------------------------------------------------------------------------

def review_run(check: SignatureCheck, run: PotencyRun) -> PotencyRun:
    """QA reviews a scored run: a valid run becomes reviewed, an invalid one invalid (with every
    reason kept on the run). Signed with meaning 'reviewed'."""
    _require_state(run, RunState.SCORED, doing="be reviewed")
    target = RunState.REVIEWED if run.valid else RunState.INVALID
    with _changing(actor_of(check.signer), "potency.run.review"):
        check_run_transition(run.state, target)
        run.state = target
        sign(check, run)
    return run


def approve_run(check: SignatureCheck, run: PotencyRun) -> PotencyRun:
    """QA approves a reviewed, valid run; its lots' % inhibition becomes what release reads."""
    _require_state(run, RunState.REVIEWED, doing="be approved")
    if not run.valid:
        raise RuleViolation("An invalid run cannot be approved.",
                            [v["message"] for v in run.validity or [] if not v["passed"]])
    with _changing(actor_of(check.signer), "potency.run.approve"):
        check_run_transition(run.state, RunState.APPROVED)
        run.state = RunState.APPROVED
        run.approved_at = utcnow()
        sign(check, run)
    return run


@dataclass(frozen=True)
class ApprovedPotency:
    """What release reads: the lot's approved % inhibition and where it comes from."""

    lot_identifier: str
    percent_inhibition: float | None
    relative_potency: float | None
    run_id: int
    run_code: str
    valid: bool
    assay_date: dt.date
    approved_at: dt.datetime

    @property
    def value(self) -> float | None:
        """The number release compares with its limit: % inhibition."""
        return self.percent_inhibition


def approved_potency_for_lot(lot_identifier: str) -> ApprovedPotency | None:
    """The most recent approved run's % inhibition for a lot under test (over all its ratios),
    or None when no approved run tested the lot."""
    row = db.session.execute(
        select(LotResult, PotencyRun).join(PotencyRun, LotResult.run_id == PotencyRun.id).where(
            LotResult.lot_identifier == lot_identifier, LotResult.ratio == "all", LotResult.role == "test",
            PotencyRun.state == RunState.APPROVED,
        ).order_by(PotencyRun.approved_at.desc(), PotencyRun.id.desc()).limit(1)).first()
    if row is None:
        return None
    result, run = row
    return ApprovedPotency(lot_identifier, result.percent_inhibition, result.relative_potency, run.id, run.code,
                           bool(run.valid), run.assay_date, run.approved_at)


# Trending -----------------------------------------------------------------------------------

@dataclass
class ControlPoint:
    run_id: int
    run_code: str
    assay_date: dt.date
    value: float
    flags: list[str]


def control_history(limit: int = 40) -> dict[str, tuple[list[ControlPoint], tuple[float, float] | None]]:
    """Levey-Jennings series of the reference lot's % inhibition and of the LPS control score
    over scored runs (oldest first), each with its mean, SD and Westgard flags."""
    runs = list(db.session.scalars(select(PotencyRun).where(PotencyRun.state.in_(
        [RunState.SCORED, RunState.REVIEWED, RunState.APPROVED, RunState.INVALID])).order_by(
        PotencyRun.assay_date.desc(), PotencyRun.id.desc()).limit(limit)))[::-1]
    series: dict[str, list[tuple[PotencyRun, float]]] = {"reference": [], "lps": []}
    for run in runs:
        reference = next((r.percent_inhibition for r in run.lot_results
                          if r.role == "reference" and r.ratio == "all"), None)
        if reference is not None:
            series["reference"].append((run, reference))
        if run.lps_score is not None:
            series["lps"].append((run, run.lps_score))
    result = {}
    for key, points in series.items():
        values = [v for _, v in points]
        stats = rules.control_statistics(values)
        flags = rules.westgard_flags(values, *stats) if stats else [[] for _ in values]
        result[key] = ([ControlPoint(r.id, r.code, r.assay_date, v, f) for (r, v), f in zip(points, flags)], stats)
    return result


# Calibration --------------------------------------------------------------------------------

def control_cell_areas(run: PotencyRun) -> tuple[list[float], list[float]]:
    """Cell areas (µm²) of the included, scored fields of unstimulated and LPS-only wells."""
    store = image_store()
    unstim: list[float] = []
    lps: list[float] = []
    for well in run.wells:
        if well.condition not in (WellCondition.UNSTIMULATED, WellCondition.LPS):
            continue
        for image in well.images:
            if image.excluded or image.result is None or image.result.status != "scored" \
                    or not image.result.cells_sha256:
                continue
            with np.load(io.BytesIO(store.get(image.result.cells_sha256))) as cells:
                areas = cells["area_um2"].tolist()
            (unstim if well.condition == WellCondition.UNSTIMULATED else lps).extend(areas)
    return unstim, lps


def propose_parameter_set(user: User, run: PotencyRun) -> CalibratedParameterSet:
    """From an approved validation run's control wells, propose a new parameter set whose
    activated/resting area boundary lies midway between the median cell area of unstimulated
    and of LPS-only wells. The set is a draft until QA approves it."""
    if not run.is_validation:
        raise RuleViolation("Only a validation run can calibrate.", ["run: not a validation run"])
    _require_state(run, RunState.APPROVED, doing="calibrate a parameter set")
    unstim, lps = control_cell_areas(run)
    try:
        boundary = rules.area_boundary(unstim, lps)
    except ValueError as refused:
        raise RuleViolation("No boundary can be proposed from this run.", [str(refused)]) from None
    base = resolve_parameter_set(run.parameter_set_name, run.parameter_set_version)
    name = "bv2-calibrated"
    latest = db.session.scalar(select(func.max(CalibratedParameterSet.version)).where(
        CalibratedParameterSet.name == name)) or 0
    values = base.to_dict()
    values.update(name=name, version=latest + 1, activated_min_area_um2=round(boundary, 1),
                  shape_rule_min_area_um2=min(base.shape_rule_min_area_um2, round(boundary, 1)))
    proposed = ParameterSet.from_dict(values)
    evidence = {"unstimulated_cells": len(unstim), "lps_cells": len(lps),
                "unstimulated_median_area_um2": float(np.median(unstim)),
                "lps_median_area_um2": float(np.median(lps)), "boundary_um2": round(boundary, 1)}
    with unit_of_work(actor_of(user), "potency.parameter_set.propose"):
        record = CalibratedParameterSet(
            name=proposed.name, version=proposed.version, values=proposed.to_dict(), based_on_name=base.name,
            based_on_version=base.version, source_run_id=run.id, evidence=evidence,
            state=ParameterSetState.DRAFT, proposed_by_id=user.id)
        db.session.add(record)
    return record


def approve_parameter_set(check: SignatureCheck, record: CalibratedParameterSet) -> CalibratedParameterSet:
    """QA approves a proposed set (e-signature); only then can new runs use it."""
    if record.state != ParameterSetState.DRAFT:
        raise RuleViolation("Only a draft parameter set can be approved.", [f"state: {record.state.value}"])
    with _changing(actor_of(check.signer), "potency.parameter_set.approve"):
        record.state = ParameterSetState.APPROVED
        record.approved_at = utcnow()
        sign(check, record)
    return record
