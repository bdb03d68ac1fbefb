"""Pages for donors, cords, batches, steps, passages, verification, reagents, deviations, fill,
vials, storage, labels and the batch record. Views parse a form, call one service, and render
or redirect; a refused rule re-renders the form with field errors (422) and the typed values."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_signer, signatures_for
from labsys.batches import forms, services, vials as vial_services
from labsys.batches.labels import box_label_pdf, vial_label_sheet_pdf
from labsys.batches.models import Batch, Box, Cord, Deviation, DeviationStatus, Donor, Passage, Rack, Reagent, Tank, Vial
from labsys.batches.record import batch_record, growth_chart_svg
from labsys.batches.rules import (ELIGIBILITY_LABELS, MARKER_LABELS, MARKER_RESULT_LABELS, REAGENT_STATUS_LABELS,
                                  SCREENING_LABELS, Eligibility, Marker, ReagentStatus)
from labsys.batches.states import (BATCH_STATUS_LABELS, VIAL_STATUS_LABELS, VIAL_TRANSITIONS, BatchStatus,
                                   VialStatus)
from labsys.documents.pdf import render_pdf
from labsys.db import utcnow
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.timefmt import parse_lab_datetime

bp = Blueprint("batches", __name__, url_prefix="/batches")
STAFF = (Role.TECHNICIAN, Role.QA)


TERM_LABELS = {
    "accepted": _l("Accepted"), "accepted_under_deviation": _l("Accepted under deviation"),
    "conforms": _l("Conforms"), "does_not_conform": _l("Does not conform"),
    "vaginal": _l("Vaginal"), "caesarean": _l("Caesarean"),
    "tissue_processing": _l("Tissue processing"), "p0": _l("P0 (primary culture)"), "passage": _l("Passage"),
    "harvest": _l("Harvest"), "formulation": _l("Formulation"), "fill": _l("Fill"),
    "explant": _l("Explant"), "enzymatic": _l("Enzymatic"), "open": _l("Open"), "closed": _l("Closed"),
}


def term(value) -> str:
    """The translated word for a stored code (status, step type, method …); codes stay neutral."""
    code = getattr(value, "value", value)
    return str(TERM_LABELS.get(code, code))


@bp.app_context_processor
def batch_labels():
    return {"term": term, "batch_status_label": lambda s: BATCH_STATUS_LABELS[BatchStatus(s)],
            "vial_status_label": lambda s: VIAL_STATUS_LABELS[VialStatus(s)],
            "eligibility_label": lambda s: ELIGIBILITY_LABELS[Eligibility(s)],
            "reagent_status_label": lambda s: REAGENT_STATUS_LABELS[ReagentStatus(s)],
            "marker_label": lambda m: MARKER_LABELS[Marker(m)],
            "marker_result_label": lambda r: MARKER_RESULT_LABELS[r],
            "screening_label": lambda s: SCREENING_LABELS[s]}


def panel_context() -> dict:
    return {
        "in_process": db.session.scalar(select(func.count(Batch.id)).where(Batch.status == BatchStatus.IN_PROCESS)),
        "quarantine": db.session.scalar(select(func.count(Batch.id)).where(Batch.status == BatchStatus.QUARANTINE)),
        "unverified": db.session.scalar(select(func.count(Passage.id)).where(Passage.verified_by_id.is_(None))),
        "open_deviations": db.session.scalar(select(func.count(Deviation.id)).where(
            Deviation.status == DeviationStatus.OPEN)),
        "pending_donors": db.session.scalar(select(func.count(Donor.id)).where(Donor.eligibility == Eligibility.PENDING)),
    }


def _refused(form, error: RuleViolation, template: str, **context):
    forms.apply_problems(form, error)
    if not getattr(error, "problems", None):
        flash(" ".join([error.message, *error.reasons]), "danger")
    return render_template(template, form=form, **context), 422


def _local(value: dt.datetime | None) -> dt.datetime | None:
    return parse_lab_datetime(value)


def _reagent_choices(form_field) -> None:
    form_field.choices = [(r.id, f"{r.item} · {r.lot} (exp. {r.expiry_date.isoformat()})")
                          for r in services.usable_reagents()]


def _page(query):
    return db.paginate(query, per_page=request.args.get("per_page", 25, type=int) or 25, error_out=False)


# ---------------------------------------------------------------- batches list
@bp.route("/")
@allow(*STAFF)
def index():
    term = request.args.get("q", "").strip()
    status = request.args.get("status", "")
    query = select(Batch).join(Batch.cord).join(Cord.donor).order_by(Batch.started_at.desc(), Batch.id.desc())
    if term:
        like = f"%{term.upper()}%"
        query = query.where(or_(Batch.identifier.like(like), func.upper(Donor.code).like(like)))
    if status in {s.value for s in BatchStatus}:
        query = query.where(Batch.status == BatchStatus(status))
    return render_template("batches/index.html", page=_page(query), term=term, status=status,
                           statuses=list(BatchStatus), counts=panel_context())


# ---------------------------------------------------------------- donors
@bp.route("/donors")
@allow(*STAFF)
def donors():
    term = request.args.get("q", "").strip()
    eligibility = request.args.get("eligibility", "")
    query = select(Donor).order_by(Donor.created_at.desc(), Donor.id.desc())
    if term:
        query = query.where(func.upper(Donor.code).like(f"%{term.upper()}%"))
    if eligibility in {e.value for e in Eligibility}:
        query = query.where(Donor.eligibility == Eligibility(eligibility))
    return render_template("batches/donors.html", page=_page(query), term=term, eligibility=eligibility)


@bp.route("/donors/new", methods=["GET", "POST"])
@allow(*STAFF)
def donor_new():
    form = forms.DonorForm()
    del form.reason
    if form.validate_on_submit():
        try:
            donor = services.register_donor(current_user, form.code.data, form.consent_date.data,
                                            form.screening_outcome.data, form.specimen_date.data, form.markers())
        except RuleViolation as error:
            return _refused(form, error, "batches/donor_form.html", donor=None)
        flash(_("Donor %(code)s registered.", code=donor.code), "success")
        return redirect(url_for("batches.donor_detail", donor_id=donor.id))
    return render_template("batches/donor_form.html", form=form, donor=None), 422 if form.errors else 200


@bp.route("/donors/<int:donor_id>", methods=["GET"])
@allow(*STAFF)
def donor_detail(donor_id: int):
    donor = services.get_or_404(Donor, donor_id)
    return render_template("batches/donor.html", donor=donor, decision=services.donor_decision(donor),
                           markers=services.markers_of(donor), signatures=signatures_for(donor),
                           sign_form=forms.SignForm())


@bp.route("/donors/<int:donor_id>/edit", methods=["GET", "POST"])
@allow(*STAFF)
def donor_edit(donor_id: int):
    donor = services.get_or_404(Donor, donor_id)
    form = forms.DonorForm(obj=donor if request.method == "GET" else None)
    if request.method == "GET":
        for marker in Marker:
            getattr(form, marker.value).data = getattr(donor, marker.value).value
        form.screening_outcome.data = donor.screening_outcome.value
    form.code.data = donor.code
    if form.validate_on_submit():
        try:
            services.update_donor(current_user, donor, form.reason.data, form.consent_date.data,
                                  form.screening_outcome.data, form.specimen_date.data, form.markers())
        except RuleViolation as error:
            return _refused(form, error, "batches/donor_form.html", donor=donor)
        flash(_("Donor %(code)s saved.", code=donor.code), "success")
        return redirect(url_for("batches.donor_detail", donor_id=donor.id))
    return render_template("batches/donor_form.html", form=form, donor=donor), 422 if form.errors else 200


@bp.route("/donors/<int:donor_id>/determine", methods=["POST"])
@allow(Role.QA)
def donor_determine(donor_id: int):
    donor = services.get_or_404(Donor, donor_id)
    form = forms.SignForm()
    if form.validate_on_submit():
        check = authenticate_signer(current_user, form.sign_username.data, form.sign_password.data,
                                    SignatureMeaning.APPROVED, form.sign_comment.data)
        try:
            services.determine_eligibility(current_user, donor, check)
        except RuleViolation as error:
            flash(" ".join([error.message, *error.reasons]), "danger")
        else:
            flash(_("Eligibility determined and signed."), "success")
            return redirect(url_for("batches.donor_detail", donor_id=donor.id))
    return render_template("batches/donor.html", donor=donor, decision=services.donor_decision(donor),
                           markers=services.markers_of(donor), signatures=signatures_for(donor),
                           sign_form=form), 422


# ---------------------------------------------------------------- cords
@bp.route("/donors/<int:donor_id>/cords/new", methods=["GET", "POST"])
@allow(*STAFF)
def cord_new(donor_id: int):
    donor = services.get_or_404(Donor, donor_id)
    form = forms.CordForm()
    if form.validate_on_submit():
        try:
            cord = services.receive_cord(
                current_user, donor, _local(form.collected_at.data), _local(form.received_at.data),
                form.transport_temperature_c.data, form.weight_g.data, form.inspection.data, form.inspection_note.data,
                form.delivery_type.data, form.gestational_age_weeks.data, form.accept_under_deviation.data,
                form.deviation_description.data)
        except RuleViolation as error:
            return _refused(form, error, "batches/cord_form.html", donor=donor)
        flash(_("Cord received."), "success")
        return redirect(url_for("batches.cord_detail", cord_id=cord.id))
    return render_template("batches/cord_form.html", form=form, donor=donor), 422 if form.errors else 200


@bp.route("/cords/<int:cord_id>")
@allow(*STAFF)
def cord_detail(cord_id: int):
    cord = services.get_or_404(Cord, cord_id)
    deviations = list(db.session.scalars(select(Deviation).where(Deviation.cord_id == cord.id)))
    return render_template("batches/cord.html", cord=cord, deviations=deviations)


@bp.route("/cords/<int:cord_id>/start", methods=["POST"])
@allow(Role.TECHNICIAN, Role.QA)
def cord_start_batch(cord_id: int):
    cord = services.get_or_404(Cord, cord_id)
    try:  # CSRFProtect has checked the form's token before the view runs
        batch = services.start_batch(current_user, cord)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "danger")
        return redirect(url_for("batches.cord_detail", cord_id=cord.id))
    flash(_("Batch %(id)s started.", id=batch.identifier), "success")
    return redirect(url_for("batches.batch_detail", batch_id=batch.id))


# ---------------------------------------------------------------- batch record
@bp.route("/<int:batch_id>")
@allow(*STAFF)
def batch_detail(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    record = batch_record(batch)
    chart = growth_chart_svg(record["growth_points"], x_label=_("days since cord receipt"),
                             y_label=_("cumulative population doublings"))
    boxes = db.session.scalars(select(Box).order_by(Box.code)).all()
    store_form = forms.StoreBatchForm()
    store_form.box_id.choices = [(b.id, f"{b.location} ({len(vial_services.free_positions(b))} free)") for b in boxes]
    return render_template("batches/batch.html", chart=chart, store_form=store_form, reprint_form=forms.ReprintForm(),
                           max_passage=services.setting("MAX_PASSAGE"), **record)


@bp.route("/<int:batch_id>/record.pdf")
@allow(*STAFF)
def batch_record_pdf(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    record = batch_record(batch)
    chart = growth_chart_svg(record["growth_points"], x_label=_("days since cord receipt"),
                             y_label=_("cumulative population doublings"))
    pdf = render_pdf("batches/pdf/batch_record.html", chart=chart, now=utcnow(), **record)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="batch-record-{batch.identifier}.pdf"'})


@bp.route("/<int:batch_id>/steps/new", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def step_new(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.StepForm()
    _reagent_choices(form.reagent_ids)
    if form.validate_on_submit():
        try:
            services.record_step(current_user, batch, form.step_type.data, _local(form.started_at.data),
                                 _local(form.ended_at.data), form.equipment.data, form.reagent_ids.data or [],
                                 form.method.data or None, form.notes.data)
        except RuleViolation as error:
            return _refused(form, error, "batches/step_form.html", batch=batch)
        flash(_("Step recorded."), "success")
        return redirect(url_for("batches.batch_detail", batch_id=batch.id))
    return render_template("batches/step_form.html", form=form, batch=batch), 422 if form.errors else 200


@bp.route("/<int:batch_id>/passages/new", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def passage_new(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.PassageForm()
    _reagent_choices(form.reagent_ids)
    if request.method == "GET":
        form.passage_number.data = (batch.max_passage_number + 1) if batch.max_passage_number is not None else 0
        if batch.passages:
            form.seeded_viable_cells.data = None
    if form.validate_on_submit():
        try:
            services.record_passage(
                current_user, batch, form.passage_number.data, _local(form.started_at.data), _local(form.ended_at.data),
                form.equipment.data, form.seeded_viable_cells.data, form.harvested_viable_cells.data,
                form.viability_percent.data, form.confluence_percent.data, form.flask_count.data,
                form.reagent_ids.data or [], form.notes.data)
        except RuleViolation as error:
            return _refused(form, error, "batches/passage_form.html", batch=batch)
        flash(_("Passage recorded. A second person must now verify the counts."), "success")
        return redirect(url_for("batches.batch_detail", batch_id=batch.id))
    return render_template("batches/passage_form.html", form=form, batch=batch), 422 if form.errors else 200


@bp.route("/passages/<int:passage_id>/verify", methods=["GET", "POST"])
@allow(Role.TECHNICIAN, Role.QA)
def passage_verify(passage_id: int):
    passage = services.get_or_404(Passage, passage_id)
    form = forms.VerifyPassageForm()
    if form.validate_on_submit():
        check = authenticate_signer(current_user, form.sign_username.data, form.sign_password.data,
                                    SignatureMeaning.VERIFIED, form.sign_comment.data)
        try:
            services.verify_passage(current_user, passage, form.harvested_viable_cells.data,
                                    form.viability_percent.data, check)
        except RuleViolation as error:
            return _refused(form, error, "batches/verify_form.html", passage=passage)
        flash(_("P%(n)d verified.", n=passage.passage_number), "success")
        return redirect(url_for("batches.batch_detail", batch_id=passage.batch_id))
    return render_template("batches/verify_form.html", form=form, passage=passage), 422 if form.errors else 200


@bp.route("/passages/<int:passage_id>/correct", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def passage_correct(passage_id: int):
    passage = services.get_or_404(Passage, passage_id)
    form = forms.PassageCorrectionForm(obj=passage if request.method == "GET" else None)
    if form.validate_on_submit():
        try:
            services.correct_passage(current_user, passage, form.reason.data, form.seeded_viable_cells.data,
                                     form.harvested_viable_cells.data, form.viability_percent.data,
                                     form.confluence_percent.data, form.flask_count.data)
        except RuleViolation as error:
            return _refused(form, error, "batches/correct_form.html", passage=passage)
        flash(_("Correction saved; the entry needs verification again."), "success")
        return redirect(url_for("batches.batch_detail", batch_id=passage.batch_id))
    return render_template("batches/correct_form.html", form=form, passage=passage), 422 if form.errors else 200


@bp.route("/<int:batch_id>/fill", methods=["GET", "POST"])
@allow(Role.TECHNICIAN)
def fill(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.FillForm()
    _reagent_choices(form.reagent_ids)
    if form.validate_on_submit():
        try:
            vials = vial_services.fill_batch(
                current_user, batch, form.vial_count.data, form.viable_cells_per_vial.data, form.volume_ml.data,
                form.cryoprotectant.data, form.viability_percent.data, _local(form.filled_at.data),
                form.equipment.data, _local(form.started_at.data), form.reagent_ids.data or [])
        except RuleViolation as error:
            return _refused(form, error, "batches/fill_form.html", batch=batch,
                            unverified=services.unverified_entries(batch))
        flash(_("%(n)d vials filled; the batch is in quarantine.", n=len(vials)), "success")
        return redirect(url_for("batches.batch_detail", batch_id=batch.id))
    return render_template("batches/fill_form.html", form=form, batch=batch,
                           unverified=services.unverified_entries(batch)), 422 if form.errors else 200


@bp.route("/<int:batch_id>/store", methods=["POST"])
@allow(Role.TECHNICIAN)
def batch_store(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.StoreBatchForm()
    form.box_id.choices = [(b.id, b.code) for b in db.session.scalars(select(Box))]
    if form.validate_on_submit():
        try:
            stored = vial_services.store_vials_in_box(current_user, vial_services.vials_of(batch),
                                                      services.get_or_404(Box, form.box_id.data))
        except RuleViolation as error:
            flash(" ".join([error.message, *error.reasons]), "danger")
        else:
            flash(_("%(n)d vials stored.", n=len(stored)), "success")
    else:
        flash(_("Choose a box."), "danger")
    return redirect(url_for("batches.batch_detail", batch_id=batch.id))


@bp.route("/<int:batch_id>/labels.pdf", methods=["POST"])
@allow(Role.TECHNICIAN, Role.QA)
def batch_labels(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.ReprintForm()
    if not form.validate_on_submit():
        flash(_("The form's security token is missing or expired. Reload the page and try again."), "danger")
        return redirect(url_for("batches.batch_detail", batch_id=batch.id))
    try:
        pdf = vial_label_sheet_pdf(batch)
        vial_services.record_vial_label_print(current_user, batch, form.reason.data)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "danger")
        return redirect(url_for("batches.batch_detail", batch_id=batch.id))
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="vial-labels-{batch.identifier}.pdf"'})


# ---------------------------------------------------------------- deviations
@bp.route("/<int:batch_id>/deviations/new", methods=["GET", "POST"])
@allow(*STAFF)
def deviation_new(batch_id: int):
    batch = services.get_or_404(Batch, batch_id)
    form = forms.DeviationForm()
    if form.validate_on_submit():
        try:
            deviation = services.raise_deviation(current_user, form.description.data, batch=batch)
        except RuleViolation as error:
            return _refused(form, error, "batches/deviation_form.html", batch=batch)
        flash(_("Deviation %(n)s raised.", n=deviation.number), "success")
        return redirect(url_for("batches.deviation_detail", deviation_id=deviation.id))
    return render_template("batches/deviation_form.html", form=form, batch=batch), 422 if form.errors else 200


@bp.route("/deviations")
@allow(*STAFF)
def deviations():
    status = request.args.get("status", "open")
    query = select(Deviation).order_by(Deviation.raised_at.desc())
    if status in {s.value for s in DeviationStatus}:
        query = query.where(Deviation.status == DeviationStatus(status))
    return render_template("batches/deviations.html", page=_page(query), status=status)


@bp.route("/deviations/<int:deviation_id>", methods=["GET", "POST"])
@allow(*STAFF)
def deviation_detail(deviation_id: int):
    deviation = services.get_or_404(Deviation, deviation_id)
    form = forms.AssessmentForm(obj=deviation if request.method == "GET" else None)
    sign_form = forms.SignForm(prefix="close")
    status = 200
    if request.method == "POST" and request.form.get("action") == "assess":
        if form.validate_on_submit():
            try:
                services.assess_deviation(current_user, deviation, form.impact_assessment.data, form.capa.data)
            except RuleViolation as error:
                forms.apply_problems(form, error)
                status = 422
            else:
                flash(_("Assessment saved."), "success")
                return redirect(url_for("batches.deviation_detail", deviation_id=deviation.id))
        else:
            status = 422
    elif request.method == "POST" and request.form.get("action") == "close":
        if not current_user.has_role(Role.QA):
            flash(_("Only QA closes deviations."), "danger")
            status = 403
        elif sign_form.validate_on_submit():
            check = authenticate_signer(current_user, sign_form.sign_username.data, sign_form.sign_password.data,
                                        SignatureMeaning.APPROVED, sign_form.sign_comment.data)
            try:
                services.close_deviation(current_user, deviation, check)
            except RuleViolation as error:
                flash(" ".join([error.message, *error.reasons]), "danger")
                status = 422
            else:
                flash(_("Deviation %(n)s closed.", n=deviation.number), "success")
                return redirect(url_for("batches.deviation_detail", deviation_id=deviation.id))
        else:
            status = 422
    return render_template("batches/deviation.html", deviation=deviation, form=form, sign_form=sign_form,
                           signatures=signatures_for(deviation)), status


# ---------------------------------------------------------------- reagents
@bp.route("/reagents", methods=["GET", "POST"])
@allow(*STAFF)
def reagents():
    form = forms.ReagentForm()
    status = 200
    if form.validate_on_submit():
        try:
            reagent = services.add_reagent(current_user, form.item.data, form.lot.data, form.supplier.data,
                                           form.expiry_date.data, form.received_on.data)
        except RuleViolation as error:
            forms.apply_problems(form, error)
            status = 422
        else:
            flash(_("Lot %(lot)s registered in quarantine.", lot=reagent.lot), "success")
            return redirect(url_for("batches.reagents"))
    elif form.errors:
        status = 422
    term = request.args.get("q", "").strip()
    query = select(Reagent).order_by(Reagent.item, Reagent.lot)
    if term:
        like = f"%{term.lower()}%"
        query = query.where(or_(func.lower(Reagent.item).like(like), func.lower(Reagent.lot).like(like)))
    return render_template("batches/reagents.html", form=form, page=_page(query), term=term,
                           status_form=forms.ReagentStatusForm(), today=dt.date.today()), status


@bp.route("/reagents/<int:reagent_id>/status", methods=["POST"])
@allow(Role.QA)
def reagent_status(reagent_id: int):
    reagent = services.get_or_404(Reagent, reagent_id)
    form = forms.ReagentStatusForm()
    if form.validate_on_submit():
        try:
            services.set_reagent_status(current_user, reagent, form.status.data, form.reason.data)
        except RuleViolation as error:
            flash(" ".join([error.message, *error.reasons]), "danger")
        else:
            flash(_("Lot %(lot)s is now %(s)s.", lot=reagent.lot, s=REAGENT_STATUS_LABELS[reagent.status]), "success")
    return redirect(url_for("batches.reagents"))


# ---------------------------------------------------------------- vials and storage
@bp.route("/vials")
@allow(Role.TECHNICIAN, Role.QA, Role.PHARMACIST)
def vials():
    term = request.args.get("q", "").strip()
    status = request.args.get("status", "")
    query = select(Vial).order_by(Vial.identifier)
    if term:
        query = query.where(Vial.identifier.like(f"%{term.upper()}%"))
    if status in {s.value for s in VialStatus}:
        query = query.where(Vial.status == VialStatus(status))
    return render_template("batches/vials.html", page=_page(query), term=term, status=status, statuses=list(VialStatus))


def _store_form() -> forms.StoreVialForm:
    form = forms.StoreVialForm()
    form.box_id.choices = [(b.id, b.location) for b in db.session.scalars(select(Box).order_by(Box.code))]
    return form


@bp.route("/vials/<int:vial_id>", methods=["GET", "POST"])
@allow(Role.TECHNICIAN, Role.QA, Role.PHARMACIST)
def vial_detail(vial_id: int):
    vial = services.get_or_404(Vial, vial_id)
    form = _store_form()
    status = 200
    if request.method == "POST":
        if not current_user.has_role(Role.TECHNICIAN, Role.PHARMACIST):
            flash(_("Your role does not allow this action."), "danger")
            status = 403
        elif form.validate_on_submit():
            try:
                vial_services.store_vial(current_user, vial, services.get_or_404(Box, form.box_id.data), form.row.data,
                                         form.column.data, form.note.data)
            except RuleViolation as error:
                forms.apply_problems(form, error)
                status = 422
            else:
                flash(_("Vial %(v)s is now at %(loc)s.", v=vial.identifier, loc=vial.location), "success")
                return redirect(url_for("batches.vial_detail", vial_id=vial.id))
        else:
            status = 422
    return render_template("batches/vial.html", vial=vial, form=form, events=vial_services.custody_events(vial),
                           allowed=sorted(VIAL_TRANSITIONS[VialStatus(vial.status)], key=lambda s: s.value)), status


@bp.route("/storage", methods=["GET", "POST"])
@allow(*STAFF)
def storage():
    tank_form, rack_form, box_form = forms.TankForm(prefix="tank"), forms.RackForm(prefix="rack"), forms.BoxForm(prefix="box")
    tanks = db.session.scalars(select(Tank).order_by(Tank.code)).all()
    rack_form.tank_id.choices = [(t.id, t.code) for t in tanks]
    racks = db.session.scalars(select(Rack).join(Rack.tank).order_by(Tank.code, Rack.code)).all()
    box_form.rack_id.choices = [(r.id, f"{r.tank.code}/{r.code}") for r in racks]
    status = 200
    action = request.form.get("action")
    if request.method == "POST":
        form = {"tank": tank_form, "rack": rack_form, "box": box_form}.get(action)
        if form is not None and form.validate_on_submit():
            try:
                if action == "tank":
                    vial_services.create_tank(current_user, tank_form.code.data, tank_form.description.data)
                elif action == "rack":
                    vial_services.create_rack(current_user, services.get_or_404(Tank, rack_form.tank_id.data),
                                              rack_form.code.data)
                else:
                    vial_services.create_box(current_user, services.get_or_404(Rack, box_form.rack_id.data),
                                             box_form.code.data, box_form.rows.data, box_form.columns.data)
            except RuleViolation as error:
                forms.apply_problems(form, error)
                status = 422
            else:
                flash(_("Saved."), "success")
                return redirect(url_for("batches.storage"))
        else:
            status = 422
    return render_template("batches/storage.html", tanks=tanks, tank_form=tank_form, rack_form=rack_form,
                           box_form=box_form, free=vial_services.free_positions), status


@bp.route("/boxes/<int:box_id>")
@allow(Role.TECHNICIAN, Role.QA, Role.PHARMACIST)
def box_detail(box_id: int):
    box = services.get_or_404(Box, box_id)
    return render_template("batches/box.html", box=box, grid=vial_services.box_grid(box),
                           reprint_form=forms.ReprintForm())


@bp.route("/boxes/<int:box_id>/label.pdf", methods=["POST"])
@allow(Role.TECHNICIAN, Role.QA)
def box_label(box_id: int):
    box = services.get_or_404(Box, box_id)
    form = forms.ReprintForm()
    if not form.validate_on_submit():
        return redirect(url_for("batches.box_detail", box_id=box.id))
    try:
        pdf = box_label_pdf(box)
        vial_services.record_box_label_print(current_user, box, form.reason.data)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "danger")
        return redirect(url_for("batches.box_detail", box_id=box.id))
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="box-label-{box.code}.pdf"'})
