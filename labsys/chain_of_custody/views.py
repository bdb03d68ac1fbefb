"""Pharmacy pages: orders to allocate, thaw, the scan-to-dispense page with the witness, the
dispensing record and its certificate, wristbands, and each vial's custody timeline."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer, signatures_for
from labsys.batches.models import Vial
from labsys.chain_of_custody import services
from labsys.chain_of_custody.forms import AllocateForm, CancelAllocationForm, DispenseForm, ThawForm
from labsys.errors import NotFound, RuleViolation, SignatureRefused
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.trial import orders as trial_orders
from labsys.trial.models import Patient

bp = Blueprint("custody", __name__, url_prefix="/pharmacy")


@bp.app_context_processor
def custody_term_helpers():
    from labsys.i18n import lazy_gettext as _l

    from labsys.chain_of_custody.models import ShipmentStatus

    labels = {ShipmentStatus.IN_TRANSIT: _l("In transit"), ShipmentStatus.RECEIVED: _l("Received")}
    return {"shipment_status_label": lambda s: str(labels[ShipmentStatus(s)])}


def _vial_or_404(vial_id: int) -> Vial:
    vial = db.session.get(Vial, vial_id)
    if vial is None:
        raise NotFound(_("There is no such vial."))
    return vial


@bp.route("/")
@allow(Role.PHARMACIST)
def pharmacy():
    orders = trial_orders.open_orders()
    rows = [(order, services.active_allocations(order)) for order in orders]
    return render_template("chain_of_custody/index.html", rows=rows, dispensings=services.dispensings()[:20])


def _order_page(order, allocate_form=None, cancel_form=None, status=200):
    proposal = services.propose_vials(order)
    allocations = services.active_allocations(order)
    thaw_form = ThawForm()
    return render_template("chain_of_custody/order.html", order=order, proposal=proposal, allocations=allocations,
                           allocate_form=allocate_form or AllocateForm(), cancel_form=cancel_form or CancelAllocationForm(),
                           thaw_form=thaw_form, use_by=services.use_by, thawed_at=services.thawed_at,
                           dispensing=services.dispensing_of_order(order),
                           hold=services.hold_minutes()), status


@bp.route("/orders/<int:order_id>")
@allow(Role.PHARMACIST)
def order(order_id: int):
    return _order_page(trial_orders.get_order(order_id))


@bp.route("/orders/<int:order_id>/allocate", methods=["POST"])
@allow(Role.PHARMACIST)
def allocate(order_id: int):
    order = trial_orders.get_order(order_id)
    form = AllocateForm()
    if not form.validate_on_submit():
        return _order_page(order, allocate_form=form, status=422)
    identifiers = [v for v in (form.vials.data or "").split(",") if v.strip()]
    try:
        services.allocate(current_user, order, identifiers)
    except RuleViolation as error:
        form.vials.errors = [error.message, *error.reasons]
        return _order_page(order, allocate_form=form, status=422)
    flash(_("%(n)d vial(s) allocated to kit %(kit)s.", n=len(identifiers), kit=order.patient.kit_number), "success")
    return redirect(url_for("custody.order", order_id=order.id))


@bp.route("/orders/<int:order_id>/cancel", methods=["POST"])
@allow(Role.PHARMACIST)
def cancel(order_id: int):
    order = trial_orders.get_order(order_id)
    form = CancelAllocationForm()
    if not form.validate_on_submit():
        return _order_page(order, cancel_form=form, status=422)
    try:
        services.cancel_allocation(current_user, order, form.reason.data)
    except RuleViolation as error:
        form.reason.errors = [error.message, *error.reasons]
        return _order_page(order, cancel_form=form, status=422)
    flash(_("Allocation cancelled; the vials are available again."), "success")
    return redirect(url_for("custody.order", order_id=order.id))


@bp.route("/vials/<int:vial_id>/thaw", methods=["POST"])
@allow(Role.PHARMACIST)
def thaw(vial_id: int):
    vial = _vial_or_404(vial_id)
    allocation = services.allocation_of_vial(vial)
    if allocation is None:
        raise NotFound(_("This vial is not allocated to an order."))
    order = trial_orders.get_order(allocation.order_id)
    form = ThawForm()
    if not form.validate_on_submit():
        return _order_page(order, status=422)
    try:
        temperature = services.parse_temperature(form.temperature_c.data)
        services.thaw(current_user, vial, temperature, form.note.data)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "error")
        return _order_page(order, status=422)
    flash(_("Vial %(v)s thawed; use within %(m)d minutes.", v=vial.identifier, m=services.hold_minutes()), "success")
    return redirect(url_for("custody.order", order_id=order.id))


def _dispense_page(form: DispenseForm, status: int = 200, refused=None):
    thawed = services.thawed_vials()
    return render_template("chain_of_custody/dispense.html", form=form, refused=refused or [],
                           thawed=[(v, services.use_by(v)) for v in thawed]), status


@bp.route("/dispense", methods=["GET", "POST"])
@allow(Role.PHARMACIST)
def dispense():
    form = DispenseForm()
    if request.method == "GET":
        return _dispense_page(form)
    if not form.validate_on_submit():
        return _dispense_page(form, 422)
    vial_codes = [v for v in (form.vials.data or "").split() if v]
    try:
        check = authenticate_form_signer(form, SignatureMeaning.DISPENSED)
    except SignatureRefused as error:
        form.sign_password.errors = [error.message, *error.reasons]
        return _dispense_page(form, 403)
    try:
        witness = services.authenticate_witness(current_user, form.witness_username.data, form.witness_password.data)
    except SignatureRefused as error:
        form.witness_password.errors = [error.message, *error.reasons]
        return _dispense_page(form, 403)
    try:
        dispensing = services.dispense(current_user, check, witness, form.patient.data, vial_codes)
    except RuleViolation as error:
        return _dispense_page(form, 422, refused=[error.message, *error.reasons])
    flash(_("Dispensed %(n)s: %(v)s to kit %(kit)s.", n=dispensing.number, v=", ".join(dispensing.vial_list),
            kit=dispensing.kit_number), "success")
    return redirect(url_for("custody.dispensing", dispensing_id=dispensing.id))


@bp.route("/dispensings/<int:dispensing_id>")
@allow(Role.PHARMACIST, Role.QA, Role.INVESTIGATOR)
def dispensing(dispensing_id: int):
    record = services.get_dispensing(dispensing_id)
    return render_template("chain_of_custody/dispensing.html", dispensing=record,
                           signatures=signatures_for(record), vials=services.vials_of_dispensing(record),
                           checks=services.checks_of(record, current_user))


@bp.route("/vials/<int:vial_id>")
@allow(Role.PHARMACIST, Role.QA, Role.TECHNICIAN, Role.INVESTIGATOR)
def vial(vial_id: int):
    record = _vial_or_404(vial_id)
    return render_template("chain_of_custody/vial.html", vial=record, events=services.timeline(record),
                           allocation=services.allocation_of_vial(record), use_by=services.use_by(record))


@bp.route("/patients/<int:patient_id>/wristband.pdf")
@allow(Role.PHARMACIST, Role.INVESTIGATOR)
def wristband(patient_id: int):
    from labsys.chain_of_custody.documents import wristband_pdf

    patient = db.session.get(Patient, patient_id)
    if patient is None or not patient.randomized:
        raise NotFound(_("No randomized patient here."))
    pdf = wristband_pdf(patient)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="wristband-{patient.kit_number}.pdf"'})


@bp.route("/dispensings/<int:dispensing_id>/certificate.pdf")
@allow(Role.PHARMACIST, Role.QA, Role.INVESTIGATOR)
def certificate(dispensing_id: int):
    from labsys.chain_of_custody.documents import certificate_pdf

    record = services.get_dispensing(dispensing_id)
    pdf = certificate_pdf(record, current_user)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{record.number}.pdf"'})


bedside = Blueprint("bedside", __name__, url_prefix="/bedside")


@bedside.route("/")
@allow(Role.INVESTIGATOR)
def index():
    waiting = [d for d in services.dispensings() if services.administration_of(d) is None]
    return render_template("chain_of_custody/bedside.html", waiting=waiting)


@bedside.route("/dispensings/<int:dispensing_id>/administer", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def administer(dispensing_id: int):
    from labsys.chain_of_custody.forms import AdministerForm
    from labsys.timefmt import parse_lab_datetime

    record = services.get_dispensing(dispensing_id)
    form = AdministerForm()
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            try:
                check = authenticate_form_signer(form, SignatureMeaning.ADMINISTERED)
            except SignatureRefused as error:
                form.sign_password.errors = [error.message, *error.reasons]
                status = 403
            else:
                try:
                    services.administer(current_user, record, check, form.wristband.data,
                                        (form.vials.data or "").split(), parse_lab_datetime(form.infusion_start.data),
                                        parse_lab_datetime(form.infusion_stop.data), form.override_reason.data)
                except RuleViolation as error:
                    for field, message in getattr(error, "problems", [(error.field or "vials", error.message)]):
                        getattr(form, field, form.vials).errors = [*getattr(form, field, form.vials).errors, message]
                else:
                    flash(_("Administration of %(n)s recorded.", n=record.number), "success")
                    return redirect(url_for("custody.dispensing", dispensing_id=record.id))
    return render_template("chain_of_custody/administer.html", form=form, dispensing=record,
                           administration=services.administration_of(record)), status


@bp.route("/accountability")
@allow(Role.PHARMACIST, Role.QA)
def accountability():
    from labsys.chain_of_custody import accountability as acc

    return render_template("chain_of_custody/accountability.html", accounts=[acc.account_for(b) for b in acc.lots()])


@bp.route("/accountability/<int:batch_id>.<fmt>")
@allow(Role.PHARMACIST, Role.QA)
def accountability_export(batch_id: int, fmt: str):
    from labsys.batches.models import Batch
    from labsys.chain_of_custody import accountability as acc
    from labsys.documents.pdf import render_pdf

    batch = db.session.get(Batch, batch_id)
    if batch is None or fmt not in ("csv", "pdf"):
        raise NotFound(_("There is no such lot report."))
    account = acc.account_for(batch)
    if fmt == "csv":
        return Response(acc.account_csv(account), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="accountability-{batch.identifier}.csv"'})
    pdf = render_pdf("chain_of_custody/pdf/accountability.html", account=account,
                     lab_timezone=current_app.config.get("LAB_TIMEZONE"))
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="accountability-{batch.identifier}.pdf"'})


def _vial_lines(text: str | None) -> list[str]:
    """Identifiers or scanned codes, one a line: a signed code gives its identifier."""
    from labsys.documents import codec

    found = []
    for line in (text or "").split():
        verdict = codec.verify(line)
        found.append(verdict.identifier if verdict.valid and verdict.kind == "vial" else line)
    return found


@bp.route("/shipments", methods=["GET", "POST"])
@allow(Role.PHARMACIST, Role.TECHNICIAN)
def shipments():
    from labsys.chain_of_custody import shipping
    from labsys.chain_of_custody.forms import ShipForm

    form = ShipForm()
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            try:
                shipment = shipping.ship(current_user, _vial_lines(form.vials.data), form.shipper.data,
                                         form.destination.data, form.min_temperature_c.data, form.max_temperature_c.data)
            except RuleViolation as error:
                for field, message in getattr(error, "problems", [("vials", error.message)]):
                    getattr(form, field).errors = [*getattr(form, field).errors, message]
            else:
                flash(_("Shipment %(n)s is in transit.", n=shipment.number), "success")
                return redirect(url_for("custody.shipment", shipment_id=shipment.id))
    return render_template("chain_of_custody/shipments.html", form=form, shipments=shipping.shipments()), status


@bp.route("/shipments/<int:shipment_id>", methods=["GET", "POST"])
@allow(Role.PHARMACIST, Role.TECHNICIAN)
def shipment(shipment_id: int):
    from labsys.chain_of_custody import shipping
    from labsys.chain_of_custody.forms import ReadingsForm, ReceiveForm

    record = shipping.get_shipment(shipment_id)
    readings_form, receive_form = ReadingsForm(), ReceiveForm()
    status = 200
    if request.method == "POST":
        status = 422
        action = request.form.get("action")
        try:
            if action == "readings" and readings_form.validate_on_submit():
                text = readings_form.log.data or ""
                upload = readings_form.log_file.data
                if upload and getattr(upload, "filename", ""):
                    text = upload.read(2_000_000).decode("utf-8", "replace")
                rows = shipping.record_readings(current_user, record, shipping.parse_readings(text))
                flash(_("%(n)d readings recorded; %(e)d outside the range.", n=len(rows),
                        e=sum(1 for r in rows if r.excursion)), "success")
                return redirect(url_for("custody.shipment", shipment_id=record.id))
            if action == "receive" and receive_form.validate_on_submit():
                shipping.receive(current_user, record, (receive_form.scans.data or "").split(), receive_form.note.data)
                flash(_("Shipment %(n)s received.", n=record.number), "success")
                return redirect(url_for("custody.shipment", shipment_id=record.id))
        except RuleViolation as error:
            target = readings_form.log if action == "readings" else receive_form.scans
            target.errors = [*target.errors, error.message, *error.reasons]
    return render_template("chain_of_custody/shipment.html", shipment=record, vials=shipping.vials_of_shipment(record),
                           readings=shipping.readings_of(record), readings_form=readings_form,
                           receive_form=receive_form), status
