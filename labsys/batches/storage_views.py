"""Pages for vials, their custody and storage (tanks, racks, boxes and the box grid)."""
from __future__ import annotations

from flask import Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from labsys.auth.roles import Role, allow
from labsys.batches import forms, services, vials as vial_services
from labsys.batches.labels import box_label_pdf
from labsys.batches.models import Batch, Box, Rack, Tank, Vial, vial_location
from labsys.batches.states import VIAL_STATUS_LABELS, VIAL_TRANSITIONS, VialStatus
from labsys.errors import RuleViolation
from labsys.db import count_of
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.listing import page_of_rows
from labsys.batches.views import STAFF, bp

QA_VIAL_STATES = (VialStatus.DESTROYED, VialStatus.EXPIRED, VialStatus.RECALLED)


# ---------------------------------------------------------------- vials and storage
@bp.route("/vials")
@allow(Role.TECHNICIAN, Role.QA, Role.PHARMACIST)
def vials():
    term = request.args.get("q", "").strip()
    status = request.args.get("status", "")
    # Only the shown columns, as rows: each vial's lot and place by join, for the page's vials only.
    rows = (select(Vial.id, Vial.identifier, Batch.identifier.label("batch_identifier"), Vial.viable_cells,
                   Vial.expiry_date, Vial.status, Vial.row, Vial.column, Box.code.label("box"),
                   Rack.code.label("rack"), Tank.code.label("tank"))
            .join(Batch, Vial.batch_id == Batch.id).outerjoin(Box, Vial.box_id == Box.id)
            .outerjoin(Rack, Box.rack_id == Rack.id).outerjoin(Tank, Rack.tank_id == Tank.id)
            .order_by(Vial.identifier))
    conditions = []
    if term:
        conditions.append(vial_services.identifier_matches(term))
    if status in {s.value for s in VialStatus}:
        conditions.append(Vial.status == VialStatus(status))
    # Every vial has its lot and the place joins are outer: the keys and the count need only the
    # vials. A search inside identifiers scans them all: it reads the matching keys once.
    page = page_of_rows(select(Vial.id).where(*conditions).order_by(Vial.identifier),
                        lambda chosen: rows.where(Vial.id.in_(chosen)), count_of(Vial).where(*conditions),
                        few=bool(term), per_page=request.args.get("per_page", 25, type=int) or 25)
    return render_template("batches/vials.html", page=page, term=term, status=status, statuses=list(VialStatus),
                           status_labels={s: str(VIAL_STATUS_LABELS[s]) for s in VialStatus},
                           vial_location=vial_location)


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
    status_form = forms.VialStatusForm()
    status_form.status.choices = [(s.value, VIAL_STATUS_LABELS[s]) for s in QA_VIAL_STATES
                                  if s in VIAL_TRANSITIONS[VialStatus(vial.status)]]
    return render_template("batches/vial.html", vial=vial, form=form, events=vial_services.custody_events(vial),
                           status_form=status_form), status


@bp.route("/vials/<int:vial_id>/status", methods=["POST"])
@allow(Role.QA)
def vial_status(vial_id: int):
    """QA takes a vial out of use (destroyed, expired, recalled) with a reason. Release and
    dispensing move vials through the other states in their own features."""
    vial = services.get_or_404(Vial, vial_id)
    form = forms.VialStatusForm()
    form.status.choices = [(s.value, VIAL_STATUS_LABELS[s]) for s in QA_VIAL_STATES]
    if form.validate_on_submit():
        try:
            vial_services.transition_vial(current_user, vial, form.status.data, form.reason.data)
        except RuleViolation as error:
            flash(" ".join([error.message, *error.reasons]), "danger")
        else:
            flash(_("Vial %(v)s is now %(s)s.", v=vial.identifier, s=VIAL_STATUS_LABELS[vial.status]), "success")
    else:
        flash(_("Choose a state and give a reason."), "danger")
    return redirect(url_for("batches.vial_detail", vial_id=vial.id))


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
