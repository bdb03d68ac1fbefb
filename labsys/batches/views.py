"""The batches blueprint and its shared helpers, with the pages of batches themselves: the list,
the batch record (page and PDF), steps, passages and their verification, fill and labels.
Donor, quality and storage pages live in donor_views, quality_views and storage_views.

Views parse a form, call one service, and render or redirect; a refused rule re-renders the
form with field errors (422) and the typed values."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select, union

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer
from labsys.batches import forms, services, vials as vial_services
from labsys.batches.labels import vial_label_sheet_pdf
from labsys.batches.models import Batch, Box, Cord, Deviation, DeviationStatus, Donor, Fill, Passage, Vial
from labsys.batches.record import batch_record, growth_chart_svg
from labsys.batches.rules import (ELIGIBILITY_LABELS, MARKER_LABELS, MARKER_RESULT_LABELS, REAGENT_STATUS_LABELS,
                                  SCREENING_LABELS, Eligibility, Marker, ReagentStatus)
from labsys.batches.states import BATCH_STATUS_LABELS, VIAL_STATUS_LABELS, BatchStatus, VialStatus
from labsys.documents.pdf import render_pdf
from labsys.db import count_of, read, utcnow
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.i18n import lazy_gettext as _l
from labsys.listing import contains, page_of_rows, starts_with
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
def batch_term_helpers():
    return {"term": term, "batch_status_label": lambda s: BATCH_STATUS_LABELS[BatchStatus(s)],
            "vial_status_label": lambda s: VIAL_STATUS_LABELS[VialStatus(s)],
            "eligibility_label": lambda s: ELIGIBILITY_LABELS[Eligibility(s)],
            "reagent_status_label": lambda s: REAGENT_STATUS_LABELS[ReagentStatus(s)],
            "marker_label": lambda m: MARKER_LABELS[Marker(m)],
            "marker_result_label": lambda r: MARKER_RESULT_LABELS[r],
            "screening_label": lambda s: SCREENING_LABELS[s]}


def panel_context() -> dict:
    return {
        "in_process": db.session.scalar(count_of(Batch).where(Batch.status == BatchStatus.IN_PROCESS)),
        "quarantine": db.session.scalar(count_of(Batch).where(Batch.status == BatchStatus.QUARANTINE)),
        "unverified": db.session.scalar(count_of(Passage).where(Passage.verified_by_id.is_(None))),
        "open_deviations": db.session.scalar(count_of(Deviation).where(
            Deviation.status == DeviationStatus.OPEN)),
        "pending_donors": db.session.scalar(count_of(Donor).where(Donor.eligibility == Eligibility.PENDING)),
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
_OPEN_DEVIATIONS = count_of(Deviation).where(Deviation.status == DeviationStatus.OPEN)

@bp.route("/")
@allow(*STAFF)
def index():
    term = request.args.get("q", "").strip()
    status = request.args.get("status", "")
    # Only the shown columns, as rows: each lot's donor code by join, its highest passage and
    # its vial count by a correlated look-up on an indexed column, for the page's 25 lots only.
    max_passage = (select(func.max(Passage.passage_number)).where(Passage.batch_id == Batch.id)
                   .correlate(Batch).scalar_subquery())
    vial_count = count_of(Vial).where(Vial.batch_id == Batch.id).correlate(Batch).scalar_subquery()
    rows = (select(Batch.id, Batch.identifier, Batch.check_character, Batch.started_at, Batch.status,
                   Donor.code.label("donor_code"), max_passage.label("max_passage"), vial_count.label("vials"))
            .join(Cord, Batch.cord_id == Cord.id).join(Donor, Cord.donor_id == Donor.id)
            .order_by(Batch.started_at.desc(), Batch.id.desc()))
    # Every lot has its cord and every cord its donor (non-null foreign keys): the keys and the
    # count need no joins. A search reads the matching keys once, for the count and the page.
    conditions = []
    if term:
        # A donation identifier typed whole or from its start is a range on the identifier index
        # (a LIKE would read every lot). Donor codes (stored upper case, ``register_donor``) are
        # matched anywhere in the donors' table. The two are a union of keys, not an OR: with an
        # OR PostgreSQL walked every lot in page order to test both sides on each (10,000 lots
        # read for one match: 11.7 → 2.5 ms on the volume data; SQLite 4.4 → 0.9 ms). As nested
        # IN sets, SQLite reads the donors' code index once (as a join it looked up each cord's donor).
        identifier = (starts_with(Batch.identifier, term.upper()) if vial_services.matches_only_at_start(term.upper())
                      else contains(Batch.identifier, term))
        matching_donors = select(Donor.id).where(contains(Donor.code, term))
        donors_lots = select(Batch.id).where(Batch.cord_id.in_(select(Cord.id).where(Cord.donor_id.in_(matching_donors))))
        conditions.append(Batch.id.in_(union(select(Batch.id).where(identifier), donors_lots)))
    if status in {s.value for s in BatchStatus}:
        conditions.append(Batch.status == BatchStatus(status))
    page = page_of_rows(select(Batch.id).where(*conditions).order_by(Batch.started_at.desc(), Batch.id.desc()),
                        lambda chosen: rows.where(Batch.id.in_(chosen)), count_of(Batch).where(*conditions),
                        few=bool(term), per_page=request.args.get("per_page", 25, type=int) or 25)
    open_deviations = read(_OPEN_DEVIATIONS).scalar()
    return render_template("batches/index.html", page=page, term=term, status=status, statuses=list(BatchStatus),
                           status_labels={s: str(BATCH_STATUS_LABELS[s]) for s in BatchStatus},
                           open_deviations=open_deviations)


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
        check = authenticate_form_signer(form, SignatureMeaning.VERIFIED)
        try:
            services.verify_passage(current_user, passage, form.harvested_viable_cells.data,
                                    form.viability_percent.data, check)
        except RuleViolation as error:
            return _refused(form, error, "batches/verify_form.html", passage=passage)
        flash(_("P%(n)d verified.", n=passage.passage_number), "success")
        return redirect(url_for("batches.batch_detail", batch_id=passage.batch_id))
    return render_template("batches/verify_form.html", form=form, passage=passage), 422 if form.errors else 200


@bp.route("/fills/<int:fill_id>/verify", methods=["GET", "POST"])
@allow(Role.TECHNICIAN, Role.QA)
def fill_verify(fill_id: int):
    fill = services.get_or_404(Fill, fill_id)
    form = forms.VerifyFillForm()
    if form.validate_on_submit():
        check = authenticate_form_signer(form, SignatureMeaning.VERIFIED)
        try:
            vial_services.verify_fill(current_user, fill, form.viable_cells_per_vial.data,
                                      form.viability_percent.data, check)
        except RuleViolation as error:
            return _refused(form, error, "batches/verify_fill_form.html", fill=fill)
        flash(_("Fill verified."), "success")
        return redirect(url_for("batches.batch_detail", batch_id=fill.batch_id))
    return render_template("batches/verify_fill_form.html", form=form, fill=fill), 422 if form.errors else 200


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
