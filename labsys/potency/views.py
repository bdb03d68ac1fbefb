"""Potency pages: runs, layout editor, uploads, scoring progress, review, trending, calibration.

Views parse a form, call one service and render or redirect."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import or_, select

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer, signatures_for
from labsys.errors import NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.potency import services
from labsys.potency.evaluation import evaluate_run
from labsys.potency.forms import ActionForm, ExcludeForm, RunForm, SignForm, UploadForm
from labsys.potency.jobs import enqueue_scoring
from labsys.potency.models import CalibratedParameterSet, FieldImage, PotencyRun
from labsys.potency.rules import PLATE_GEOMETRY, plate_wells
from labsys.potency.states import ParameterSetState, RunState, WellCondition
from labsys.potency.svg import levey_jennings_svg

bp = Blueprint("potency", __name__, url_prefix="/potency")
api = Blueprint("potency_api", __name__, url_prefix="/api/potency")

STAFF = (Role.TECHNICIAN, Role.QA)


def rule_labels() -> dict[str, str]:
    """Translated names of the validity rules (their stored messages stay language-neutral)."""
    return {"min_cells_per_field": _("Minimum cells per field"), "replicate_cv": _("Replicate CV"),
            "z_prime": _("Assay window (Z′)"), "reference_lot": _("Reference lot within its control limits"),
            "images_scored": _("Every included field scored")}


def _run_or_404(run_id: int) -> PotencyRun:
    return services.get_run(run_id)


def _image_or_404(image_id: int) -> FieldImage:
    image = db.session.get(FieldImage, image_id)
    if image is None:
        raise NotFound(f"No field image {image_id}.")
    return image


def _reasons_to_form(form, refused: RuleViolation) -> None:
    for reason in refused.reasons:
        name, _sep, message = reason.partition(": ")
        field = getattr(form, name, None) if message else None
        if field is not None and hasattr(field, "errors"):
            field.errors = list(field.errors) + [message]
        else:
            form.form_errors.append(reason)


@bp.route("/")
@allow(*STAFF)
def index():
    query = select(PotencyRun)
    q = request.args.get("q", "").strip()
    state = request.args.get("state", "")
    if q:
        like = f"%{q}%"
        query = query.where(or_(PotencyRun.code.ilike(like), PotencyRun.lps_lot.ilike(like),
                                PotencyRun.reference_lot.ilike(like),
                                db.cast(PotencyRun.test_lots, db.String).ilike(like)))
    if state in {s.value for s in RunState}:
        query = query.where(PotencyRun.state == RunState(state))
    page = db.paginate(query.order_by(PotencyRun.assay_date.desc(), PotencyRun.id.desc()),
                       per_page=current_app.config["PAGE_SIZE"], error_out=False, count=True)
    return render_template("potency/index.html", page=page, q=q, state=state, states=list(RunState))


@bp.route("/new", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def new_run():
    form = RunForm()
    form.parameter_set.choices = [(f"{name}@{version}", label) for name, version, label in services.usable_parameter_sets()]
    if form.validate_on_submit():
        try:
            run = services.create_run(
                current_user, assay_date=form.assay_date.data, bv2_passage=form.bv2_passage.data,
                lps_lot=form.lps_lot.data, lps_ng_per_ml=form.lps_ng_per_ml.data, test_lots=form.test_lots.data or "",
                reference_lot=form.reference_lot.data, plate_format=int(form.plate_format.data),
                parameter_set=form.parameter_set.data, pixel_size_um=form.pixel_size_um.data,
                image_channel=form.image_channel.data, measure=form.measure.data,
                is_validation=form.is_validation.data, min_cells_per_field=form.min_cells_per_field.data,
                max_replicate_cv_percent=form.max_replicate_cv_percent.data, min_z_prime=form.min_z_prime.data,
                reference_min_inhibition=form.reference_min_inhibition.data,
                reference_max_inhibition=form.reference_max_inhibition.data, notes=form.notes.data)
        except RuleViolation as refused:
            _reasons_to_form(form, refused)
        else:
            flash(_("Run %(code)s recorded. Lay out the plate next.", code=run.code), "success")
            return redirect(url_for("potency.layout", run_id=run.id))
    status = 422 if request.method == "POST" else 200
    return render_template("potency/run_form.html", form=form), status


@bp.route("/<int:run_id>/layout", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def layout(run_id: int):
    run = _run_or_404(run_id)
    form = ActionForm()
    errors: list[str] = []
    values = {w.well: (w.condition.value, w.lot_identifier or "", w.ratio or "") for w in run.wells}
    if request.method == "POST" and form.validate_on_submit():
        assignments = {}
        for well in plate_wells(run.plate_format):
            condition = request.form.get(f"cond-{well}", "empty")
            if condition not in {c.value for c in WellCondition}:
                errors.append(f"{well}: unknown condition")
                continue
            lot = request.form.get(f"lot-{well}", "")
            ratio = request.form.get(f"ratio-{well}", "")
            values[well] = (condition, lot, ratio)
            if condition == "empty" and well not in {w.well for w in run.wells}:
                continue
            assignments[well] = services.WellAssignment(WellCondition(condition), lot, ratio)
        if not errors:
            try:
                services.save_layout(current_user, run, assignments)
            except RuleViolation as refused:
                errors = refused.reasons or [refused.message]
            else:
                flash(_("Plate layout saved."), "success")
                return redirect(url_for("potency.run", run_id=run.id))
    elif request.method == "POST":
        errors.append(_("The form's security token is missing or expired. Reload the page and try again."))
    rows, cols = PLATE_GEOMETRY[run.plate_format]
    status = 422 if errors else 200
    return render_template("potency/layout.html", run=run, form=form, errors=errors, values=values,
                           row_names=[chr(ord("A") + r) for r in range(rows)], col_numbers=list(range(1, cols + 1)),
                           conditions=list(WellCondition)), status


@bp.route("/<int:run_id>/upload", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def upload(run_id: int):
    run = _run_or_404(run_id)
    form = UploadForm()
    reasons: list[str] = []
    if form.validate_on_submit():
        # Streams, not bytes: the service checks each size before reading (no 200 MB in memory).
        files = [(f.filename or "", f.stream) for f in request.files.getlist(form.files.name) if f and f.filename]
        try:
            created = services.upload_images(current_user, run, files, well=form.well.data or None,
                                             field_number=form.field_number.data)
        except RuleViolation as refused:
            reasons = refused.reasons or [refused.message]
            form.files.errors = list(form.files.errors) + [refused.message]
        else:
            flash(_("%(n)d image(s) stored.", n=len(created)), "success")
            return redirect(url_for("potency.run", run_id=run.id))
    status = 422 if request.method == "POST" else 200
    return render_template("potency/upload.html", run=run, form=form, reasons=reasons), status


@bp.route("/<int:run_id>/score", methods=["POST"])
@allow(Role.TECHNICIAN, Role.QA)
def score(run_id: int):
    run = _run_or_404(run_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        services.start_scoring(current_user, run)
    except RuleViolation as refused:
        for reason in [refused.message, *refused.reasons]:
            flash(reason, "danger")
        return redirect(url_for("potency.run", run_id=run_id))
    enqueue_scoring(run_id)
    flash(_("Scoring started."), "info")
    return redirect(url_for("potency.run", run_id=run_id))


@bp.route("/<int:run_id>")
@allow(*STAFF)
def run(run_id: int):
    run = _run_or_404(run_id)
    evaluation = evaluate_run(run) if run.state not in (RunState.DRAFT, RunState.SCORING) else None
    rows, cols = PLATE_GEOMETRY[run.plate_format]
    wells = {w.well: w for w in run.wells}
    images = [image for w in run.wells for image in w.images]
    return render_template("potency/run.html", run=run, evaluation=evaluation, wells=wells, images=images,
                           row_names=[chr(ord("A") + r) for r in range(rows)], col_numbers=list(range(1, cols + 1)),
                           heat=_heat_bins(evaluation), rule_labels=rule_labels(), action_form=ActionForm(),
                           sign_form=SignForm(), stop_form=ExcludeForm(),
                           signatures=signatures_for(run),
                           can_qa=current_user.has_role(Role.QA),
                           can_tech=current_user.has_role(Role.TECHNICIAN))


def _heat_bins(evaluation) -> dict[str, str]:
    """Shade class per well (heat-0 … heat-4, low to high score); numbers are always shown too."""
    if evaluation is None:
        return {}
    scores = {name: s.score for name, s in evaluation.wells.items() if s.score is not None}
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = (high - low) or 1.0
    return {name: f"heat-{min(4, int(5 * (value - low) / span))}" for name, value in scores.items()}


@bp.route("/<int:run_id>/stop-scoring", methods=["POST"])
@allow(Role.TECHNICIAN, Role.QA)
def stop_scoring(run_id: int):
    run = _run_or_404(run_id)
    form = ExcludeForm()
    if not form.validate_on_submit():
        flash(_("A reason is required."), "danger")
        return redirect(url_for("potency.run", run_id=run_id))
    services.stop_scoring(current_user, run, form.reason.data)
    flash(_("Scoring stopped; the run is a draft again."), "warning")
    return redirect(url_for("potency.run", run_id=run_id))


@api.route("/runs/<int:run_id>/progress")
@allow(*STAFF)
def progress(run_id: int):
    run = _run_or_404(run_id)
    return jsonify({"run_id": run.id, "state": run.state.value, "fields_total": run.fields_total,
                    "fields_done": run.fields_done, "fields_failed": run.fields_failed,
                    "percent": run.progress_percent,
                    "finished": run.state != RunState.SCORING})


def _sign(meaning: SignatureMeaning):
    form = SignForm()
    if not form.validate_on_submit():
        raise RuleViolation(_("Enter your user ID and password to sign."),
                            [f"{name}: {', '.join(map(str, errors))}" for name, errors in form.errors.items()])
    return authenticate_form_signer(form, meaning)


@bp.route("/<int:run_id>/review", methods=["POST"])
@allow(Role.QA)
def review(run_id: int):
    run = _run_or_404(run_id)
    check = _sign(SignatureMeaning.REVIEWED)
    services.review_run(check, run)
    flash(_("Run reviewed: %(state)s.", state=run.state.label), "success" if run.valid else "warning")
    return redirect(url_for("potency.run", run_id=run_id))


@bp.route("/<int:run_id>/approve", methods=["POST"])
@allow(Role.QA)
def approve(run_id: int):
    run = _run_or_404(run_id)
    check = _sign(SignatureMeaning.APPROVED)
    services.approve_run(check, run)
    flash(_("Run approved. Its percent inhibition is now what release reads."), "success")
    return redirect(url_for("potency.run", run_id=run_id))


@bp.route("/images/<int:image_id>", methods=["GET", "POST"])
@allow(*STAFF)
def image(image_id: int):
    image = _image_or_404(image_id)
    run = _run_or_404(image.run_id)
    form = ExcludeForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                services.exclude_field(current_user, image, form.reason.data)
            except RuleViolation as refused:
                form.reason.errors = list(form.reason.errors) + refused.reasons
                status = 422
            else:
                flash(_("Field excluded; the reason is in the audit trail."), "success")
                return redirect(url_for("potency.image", image_id=image_id))
        else:
            status = 422
    siblings = sorted((i for w in run.wells for i in w.images), key=lambda i: (i.plate_well.well, i.field_number))
    index = next(n for n, i in enumerate(siblings) if i.id == image.id)
    return render_template("potency/image.html", run=run, image=image, form=form,
                           previous=siblings[index - 1] if index > 0 else None,
                           following=siblings[index + 1] if index + 1 < len(siblings) else None), status


@bp.route("/images/<int:image_id>/overlay.png")
@allow(*STAFF)
def overlay_png(image_id: int):
    image = _image_or_404(image_id)
    if image.result is None or not image.result.overlay_sha256:
        raise NotFound(_("This field has no outline picture (not scored yet)."))
    data = services.image_store().get(image.result.overlay_sha256)
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})


@bp.route("/images/<int:image_id>/raw.png")
@allow(*STAFF)
def raw_png(image_id: int):
    from labsys.potency.analysis import contrast_stretch
    from labsys.potency.images import decode
    from labsys.potency.scoring import png_bytes

    image = _image_or_404(image_id)
    run = _run_or_404(image.run_id)
    data = services.image_store().get(image.sha256)
    plane, _ = decode(data, image.original_filename, int(current_app.config["POTENCY_MAX_IMAGE_PIXELS"]),
                      run.image_channel)
    return Response(png_bytes(contrast_stretch(plane)), mimetype="image/png",
                    headers={"Cache-Control": "private, max-age=86400"})


@bp.route("/trends")
@allow(*STAFF)
def trends():
    history = services.control_history()
    charts = []
    for key, title, unit in (("reference", _("Reference lot percent inhibition"), "%"),
                             ("lps", _("LPS-only control score"), "")):
        points, stats = history[key]
        charts.append({"key": key, "title": title, "points": points, "stats": stats,
                       "svg": levey_jennings_svg(points, stats, title, unit)})
    return render_template("potency/trends.html", charts=charts)


@bp.route("/calibration")
@allow(*STAFF)
def calibration():
    records = list(db.session.scalars(select(CalibratedParameterSet).order_by(CalibratedParameterSet.id.desc())))
    candidates = list(db.session.scalars(select(PotencyRun).where(
        PotencyRun.is_validation.is_(True), PotencyRun.state == RunState.APPROVED).order_by(PotencyRun.id.desc())))
    return render_template("potency/calibration.html", records=records, candidates=candidates,
                           builtin=services.PARAMETER_SETS, action_form=ActionForm(), sign_form=SignForm(),
                           signatures={r.id: signatures_for(r) for r in records},
                           can_qa=current_user.has_role(Role.QA))


@bp.route("/<int:run_id>/calibrate", methods=["POST"])
@allow(Role.QA)
def calibrate(run_id: int):
    run = _run_or_404(run_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    record = services.propose_parameter_set(current_user, run)
    flash(_("Parameter set %(name)s version %(v)d proposed; it needs QA approval before use.",
            name=record.name, v=record.version), "success")
    return redirect(url_for("potency.calibration"))


@bp.route("/parameter-sets/<int:parameter_set_id>/approve", methods=["POST"])
@allow(Role.QA)
def approve_parameter_set(parameter_set_id: int):
    record = db.session.get(CalibratedParameterSet, parameter_set_id)
    if record is None:
        raise NotFound(f"No parameter set {parameter_set_id}.")
    check = _sign(SignatureMeaning.APPROVED)
    services.approve_parameter_set(check, record)
    flash(_("Parameter set approved for new runs."), "success")
    return redirect(url_for("potency.calibration"))


def route_examples() -> dict[str, list]:
    """Real URL arguments from the demo data, for the route walks of the test suite."""
    return {"run_id": list(db.session.scalars(select(PotencyRun.id).order_by(PotencyRun.id).limit(2))),
            "image_id": list(db.session.scalars(select(FieldImage.id).order_by(FieldImage.id).limit(2))),
            "parameter_set_id": list(db.session.scalars(select(CalibratedParameterSet.id).limit(2)))}


def panel_context() -> dict:
    scoring = db.session.scalar(select(db.func.count()).select_from(PotencyRun).where(
        PotencyRun.state == RunState.SCORING)) or 0
    awaiting = db.session.scalar(select(db.func.count()).select_from(PotencyRun).where(
        PotencyRun.state.in_([RunState.SCORED, RunState.REVIEWED]))) or 0
    return {"scoring": scoring, "awaiting": awaiting,
            "drafts": db.session.scalar(select(db.func.count()).select_from(PotencyRun).where(
                PotencyRun.state == RunState.DRAFT)) or 0,
            "pending_sets": db.session.scalar(select(db.func.count()).select_from(CalibratedParameterSet).where(
                CalibratedParameterSet.state == ParameterSetState.DRAFT)) or 0}
