"""Trial pages. Views parse a form, call one service and render or redirect. Arms reach a
template only through ``arm_label`` (masking.py) or for unblinded users."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer, signatures_for
from labsys.errors import NotFound, RuleViolation
from labsys.i18n import gettext as _
from labsys.listing import contains, page_of, search_term
from labsys.timefmt import parse_lab_datetime
from labsys.trial import followup, forms, orders, services
from labsys.trial.masking import arm_name, may_see_arm
from labsys.trial.models import InfusionOrder, Patient
from labsys.trial.rules import ARM_CONTROL

bp = Blueprint("trial", __name__, url_prefix="/trial")
api = Blueprint("trial_api", __name__, url_prefix="/api/trial")

STAFF = (Role.PHARMACIST, Role.INVESTIGATOR)


def panel_context() -> dict[str, Any]:
    trial = services.get_trial()
    if trial is None:
        return {"trial": None}
    counts = services.allocation_counts(trial)
    return {"trial": trial, "randomized": counts["used"], "open_orders": len(orders.open_orders())}


def _refuse(form, refused: RuleViolation, field_name: str):
    """Show every reason on the form (field errors), keep typed values, answer 422."""
    target = getattr(form, field_name, None)
    messages = list(refused.reasons) or [refused.message]
    if target is not None:
        target.errors = list(target.errors or []) + messages
    flash(refused.message, "danger")


# --- Trial and allocation list --------------------------------------------------------------------

@bp.route("/")
@allow(*STAFF)
def index():
    trial = services.get_trial()
    context: dict[str, Any] = {"trial": trial}
    if trial is not None:
        context.update(counts=services.allocation_counts(trial), patients=services.patients(trial),
                       open_orders=orders.open_orders())
    return render_template("trial/index.html", **context)


@bp.route("/setup", methods=["GET", "POST"])
@allow(Role.PHARMACIST)
def setup():
    trial = services.get_trial()
    form = forms.TrialForm(obj=trial)
    if request.method == "GET" and trial is not None:
        form.exclusions.data = "\n".join(trial.exclusions)
    status = 200
    if form.validate_on_submit():
        values = {name: getattr(form, name).data for name in services.TRIAL_FIELDS if name != "exclusions"}
        values["exclusions"] = (form.exclusions.data or "").splitlines()
        try:
            services.save_trial(current_user, values, trial)
        except RuleViolation as refused:
            for name, messages in getattr(refused, "field_problems", {}).items():
                getattr(form, name).errors = list(getattr(form, name).errors or []) + messages
            status = 422
        else:
            flash(_("Trial configuration saved."), "success")
            return redirect(url_for("trial.index"))
    elif form.errors:
        status = 422
    return render_template("trial/setup.html", form=form, trial=trial), status


@bp.route("/allocation", methods=["GET", "POST"])
@allow(Role.PHARMACIST)
def allocation():
    trial = services.require_trial()
    form = forms.GenerateListForm()
    status = 200
    if form.validate_on_submit():
        try:
            lines = services.generate_allocation_list(current_user, trial)
        except RuleViolation as refused:
            _refuse(form, refused, "confirm")
            status = 422
        else:
            flash(_("The allocation list was generated: %(n)d lines, sealed.", n=lines), "success")
            return redirect(url_for("trial.allocation"))
    elif form.errors:
        status = 422
    lines = services.unsealed_list(current_user, trial) if trial.list_generated_at else []
    return render_template("trial/allocation.html", trial=trial, form=form, lines=lines,
                           counts=services.allocation_counts(trial), arm_name=arm_name), status


@bp.route("/allocation.csv")
@allow(Role.PHARMACIST)
def allocation_csv():
    trial = services.require_trial()
    body = services.export_allocation_csv(current_user, trial)
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=allocation-{trial.registry_number}.csv"})


# --- Patients ------------------------------------------------------------------------------------

@bp.route("/patients")
@allow(*STAFF)
def patients():
    trial = services.require_trial()
    term = search_term()
    query = select(Patient).where(Patient.trial_id == trial.id).order_by(Patient.enrolled_at, Patient.id)
    if term:
        query = query.where(or_(contains(func.upper(Patient.screening_number), term),
                                contains(func.upper(Patient.study_id), term),
                                contains(func.upper(Patient.kit_number), term)))
    return render_template("trial/patients.html", trial=trial, page=page_of(query), term=term)


def _screening_values(form, trial) -> dict[str, Any]:
    return {
        "screening_number": form.screening_number.data if hasattr(form, "screening_number") else None,
        "year_of_birth": form.year_of_birth.data if hasattr(form, "year_of_birth") else None,
        "age_years": form.age_years.data if hasattr(form, "age_years") else None,
        "sex": form.sex.data if hasattr(form, "sex") else None,
        "weight_kg": form.weight_kg.data, "weight_date": form.weight_date.data,
        "consent_date": form.consent_date.data, "diagnosis_confirmed": form.diagnosis_confirmed.data,
        "exclusions": {item: getattr(form, f"exclusion_{i}").data for i, item in enumerate(trial.exclusions)},
    }


FIELD_FOR_RULE = {"age": "age_years", "consent": "consent_date", "diagnosis": "diagnosis_confirmed",
                  "weight": "weight_kg", "screening_number": "screening_number"}


def _refuse_screening(form, refused: RuleViolation, trial) -> None:
    names = (refused.field or "").split(",")
    placed = False
    for name, message in zip(names, refused.reasons):
        if name.startswith("exclusion:"):
            item = name.split(":", 1)[1]
            field_name = f"exclusion_{trial.exclusions.index(item)}" if item in trial.exclusions else None
        else:
            field_name = FIELD_FOR_RULE.get(name)
        if name == "age" and getattr(form, "year_of_birth", None) is not None and form.year_of_birth.data \
                and not form.age_years.data:
            field_name = "year_of_birth"
        if name == "reason":
            field_name = "reason"
        field = getattr(form, field_name, None) if field_name else None
        if field is not None:
            field.errors = list(field.errors or []) + [message]
            placed = True
    if not placed:
        fallback = getattr(form, "screening_number", None) or form.weight_kg
        fallback.errors = list(fallback.errors or []) + (list(refused.reasons) or [refused.message])
    flash(refused.message, "danger")


@bp.route("/patients/new", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def enrol():
    trial = services.require_trial()
    form = forms.patient_form_class(trial.exclusions)()
    status = 200
    if form.validate_on_submit():
        try:
            patient = services.enrol_patient(current_user, trial, _screening_values(form, trial))
        except RuleViolation as refused:
            _refuse_screening(form, refused, trial)
            status = 422
        else:
            flash(_("Patient %(s)s enrolled (eligibility: %(e)s).", s=patient.screening_number,
                    e=patient.eligibility.value), "success")
            return redirect(url_for("trial.patient", patient_id=patient.id))
    elif form.errors:
        status = 422
    return render_template("trial/enrol.html", form=form, trial=trial,
                           exclusion_fields=[getattr(form, f"exclusion_{i}") for i in range(len(trial.exclusions))]), status


@bp.route("/patients/<int:patient_id>/screening", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def screening(patient_id: int):
    patient = services.get_patient(patient_id)
    trial = patient.trial
    answers = patient.exclusions
    yes_no = {True: "yes", False: "no", None: ""}
    form_class = forms.patient_form_class(trial.exclusions, identity=False)
    if request.method == "GET":
        form = form_class(obj=patient, data={
            "diagnosis_confirmed": yes_no[patient.diagnosis_confirmed],
            **{f"exclusion_{i}": yes_no[answers.get(item)] for i, item in enumerate(trial.exclusions)}})
    else:
        form = form_class()
    status = 200
    if form.validate_on_submit():
        try:
            services.update_screening(current_user, patient, _screening_values(form, trial), form.reason.data)
        except RuleViolation as refused:
            _refuse_screening(form, refused, trial)
            status = 422
        else:
            flash(_("Screening updated (eligibility: %(e)s).", e=patient.eligibility.value), "success")
            return redirect(url_for("trial.patient", patient_id=patient.id))
    elif form.errors:
        status = 422
    return render_template("trial/screening.html", form=form, patient=patient,
                           exclusion_fields=[getattr(form, f"exclusion_{i}") for i in range(len(trial.exclusions))]), status


@bp.route("/patients/<int:patient_id>")
@allow(*STAFF)
def patient(patient_id: int):
    patient = services.get_patient(patient_id)
    order = orders.active_order(patient)
    return render_template("trial/patient.html", patient=patient, trial=patient.trial,
                           eligibility=services.eligibility_results(patient), order=order,
                           orders=orders.orders_for(patient),
                           visits=followup.schedule(patient) if patient.randomized else [],
                           events=followup.adverse_events(patient), confirm=forms.ConfirmForm(),
                           unblindings=[u for u in services.unblindings() if u.patient_id == patient.id])


@bp.route("/patients/<int:patient_id>/randomize", methods=["POST"])
@allow(Role.PHARMACIST)
def randomize(patient_id: int):
    patient = services.get_patient(patient_id)
    form = forms.ConfirmForm()
    if not form.validate_on_submit():
        flash(_("The form expired; try again."), "danger")
        return redirect(url_for("trial.patient", patient_id=patient.id))
    try:
        arm = services.randomize_patient(current_user, patient)
    except RuleViolation as refused:
        flash(" ".join([refused.message, *refused.reasons]), "danger")
        return render_template("trial/refused.html", refused=refused, patient=patient), 422
    flash(_("Randomized: study ID %(s)s, kit %(k)s, arm: %(a)s.", s=patient.study_id, k=patient.kit_number,
            a=arm_name(patient.trial, arm)), "success")
    return redirect(url_for("trial.patient", patient_id=patient.id))


@bp.route("/patients/<int:patient_id>/unblind", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def unblind(patient_id: int):
    patient = services.get_patient(patient_id)
    form = forms.UnblindForm()
    status = 200
    if form.validate_on_submit():
        check = authenticate_form_signer(form, SignatureMeaning.AUTHORED)
        try:
            unblinding, arm = services.emergency_unblind(current_user, patient, form.reason.data, check)
        except RuleViolation as refused:
            _refuse(form, refused, "reason")
            status = 422
        else:
            return render_template("trial/unblinded.html", patient=patient, unblinding=unblinding, arm=arm,
                                   signatures=signatures_for(unblinding))
    elif form.errors:
        status = 422
    return render_template("trial/unblind.html", form=form, patient=patient), status


@bp.route("/unblindings")
@allow(Role.PHARMACIST, Role.INVESTIGATOR, Role.QA)
def unblindings():
    records = services.unblindings()
    return render_template("trial/unblindings.html", records=records,
                           signatures={u.id: signatures_for(u) for u in records})


# --- Orders --------------------------------------------------------------------------------------

@bp.route("/patients/<int:patient_id>/order", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def order_new(patient_id: int):
    patient = services.get_patient(patient_id)
    form = forms.OrderForm()
    status = 200
    if form.validate_on_submit():
        try:
            order = orders.order_infusion(current_user, patient, form.infusion_date.data)
        except RuleViolation as refused:
            _refuse(form, refused, "infusion_date")
            status = 422
        else:
            flash(_("Infusion ordered for %(d)s.", d=order.infusion_date.isoformat()), "success")
            return redirect(url_for("trial.order_detail", order_id=order.id))
    elif form.errors:
        status = 422
    return render_template("trial/order_new.html", form=form, patient=patient), status


@bp.route("/orders")
@allow(*STAFF)
def order_list():
    term = search_term()
    query = select(InfusionOrder).join(InfusionOrder.patient).order_by(InfusionOrder.id.desc())
    if term:
        query = query.where(or_(contains(func.upper(Patient.study_id), term),
                                contains(func.upper(Patient.screening_number), term)))
    return render_template("trial/orders.html", open_orders=orders.open_orders(), page=page_of(query), term=term)


@bp.route("/orders/<int:order_id>")
@allow(*STAFF)
def order_detail(order_id: int):
    order = orders.get_order(order_id)
    return render_template("trial/order.html", order=order, patient=order.patient,
                           signatures=signatures_for(order), cancel_form=forms.CancelOrderForm(),
                           prep=orders.preparation_for(current_user, order))


@bp.route("/orders/<int:order_id>/cancel", methods=["POST"])
@allow(*STAFF)
def order_cancel(order_id: int):
    order = orders.get_order(order_id)
    form = forms.CancelOrderForm()
    if not form.validate_on_submit():
        flash(_("Give a reason to cancel the order."), "danger")
        return redirect(url_for("trial.order_detail", order_id=order.id))
    try:
        orders.cancel_order(current_user, order, form.reason.data)
    except RuleViolation as refused:
        flash(" ".join([refused.message, *refused.reasons]), "danger")
    else:
        flash(_("Order cancelled."), "success")
    return redirect(url_for("trial.order_detail", order_id=order.id))


@bp.route("/orders/<int:order_id>/prepare", methods=["GET", "POST"])
@allow(Role.PHARMACIST)
def prepare(order_id: int):
    order = orders.get_order(order_id)
    patient = order.patient
    arm = services.arm_for(current_user, patient)
    placebo = arm == ARM_CONTROL
    form = forms.PreparePlaceboForm() if placebo else forms.PrepareCellsForm()
    status = 200
    plan = None
    if form.validate_on_submit():
        check = authenticate_form_signer(form, SignatureMeaning.DISPENSED)
        try:
            if placebo:
                orders.prepare_placebo(current_user, order, placebo_identifier=form.placebo_identifier.data,
                                       volume_ml=form.volume_ml.data, check=check)
            else:
                orders.prepare_cells(
                    current_user, order, lot_identifier=form.lot_identifier.data,
                    vial_identifiers=[v.strip() for v in form.vial_identifiers.data.replace(",", "\n").splitlines() if v.strip()],
                    viable_cells_per_vial=form.viable_cells_per_vial.data,
                    post_thaw_viability=form.post_thaw_viability.data,
                    endotoxin_eu_per_ml=form.endotoxin_eu_per_ml.data, volume_ml=form.volume_ml.data, check=check)
        except RuleViolation as refused:
            _refuse(form, refused, "placebo_identifier" if placebo else "vial_identifiers")
            status = 422
        else:
            flash(_("Preparation recorded and signed."), "success")
            return redirect(url_for("trial.order_detail", order_id=order.id))
    elif form.errors:
        status = 422
    if not placebo and getattr(form, "viable_cells_per_vial", None) is not None and form.viable_cells_per_vial.data:
        try:
            plan = orders.plan_cells(order, form.viable_cells_per_vial.data, form.post_thaw_viability.data)
        except ValueError:
            plan = None
    return render_template("trial/prepare.html", form=form, order=order, patient=patient, placebo=placebo,
                           arm=arm_name(patient.trial, arm) if arm else None, plan=plan), status


@bp.route("/orders/<int:order_id>/administer", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def administer(order_id: int):
    order = orders.get_order(order_id)
    form = forms.AdministerForm()
    status = 200
    if form.validate_on_submit():
        check = authenticate_form_signer(form, SignatureMeaning.ADMINISTERED)
        try:
            orders.record_administration(current_user, order, parse_lab_datetime(form.administered_at.data), check)
        except RuleViolation as refused:
            _refuse(form, refused, "administered_at")
            status = 422
        else:
            flash(_("Administration recorded and signed."), "success")
            return redirect(url_for("trial.order_detail", order_id=order.id))
    elif form.errors:
        status = 422
    return render_template("trial/administer.html", form=form, order=order, patient=order.patient), status


# --- Follow-up ------------------------------------------------------------------------------------

@bp.route("/patients/<int:patient_id>/visits/<int:study_day>", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def visit(patient_id: int, study_day: int):
    patient = services.get_patient(patient_id)
    if study_day not in patient.trial.visit_day_list:
        raise NotFound(_("Day %(d)d is not a scheduled visit.", d=study_day))
    existing = followup.visits_for(patient).get(study_day)
    form = forms.VisitForm(obj=existing if request.method == "GET" else None)
    if request.method == "GET" and existing is not None:
        form.status.data = existing.status.value
    status = 200
    if form.validate_on_submit():
        values = {name: getattr(form, name).data for name, _label in followup.ENDPOINTS}
        try:
            followup.record_visit(current_user, patient, study_day, form.status.data, form.visit_date.data, values,
                                  form.reason.data)
        except RuleViolation as refused:
            _refuse(form, refused, "reason" if refused.field == "reason" else "visit_date")
            status = 422
        else:
            flash(_("Day %(d)d visit saved.", d=study_day), "success")
            return redirect(url_for("trial.patient", patient_id=patient.id))
    elif form.errors:
        status = 422
    return render_template("trial/visit.html", form=form, patient=patient, study_day=study_day,
                           existing=existing), status


@bp.route("/patients/<int:patient_id>/outcome", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def outcome(patient_id: int):
    patient = services.get_patient(patient_id)
    form = forms.OutcomeForm(obj=patient if request.method == "GET" else None)
    if request.method == "GET" and patient.vital_status_day90:
        form.vital_status.data = patient.vital_status_day90.value
    status = 200
    if form.validate_on_submit():
        try:
            followup.record_outcome(current_user, patient, admission_date=form.admission_date.data,
                                    discharge_date=form.discharge_date.data, vital_status=form.vital_status.data,
                                    death_date=form.death_date.data, reason=form.reason.data)
        except RuleViolation as refused:
            _refuse(form, refused, "reason" if refused.field == "reason" else "vital_status")
            status = 422
        else:
            flash(_("Outcome saved."), "success")
            return redirect(url_for("trial.patient", patient_id=patient.id))
    elif form.errors:
        status = 422
    return render_template("trial/outcome.html", form=form, patient=patient), status


@bp.route("/patients/<int:patient_id>/adverse-events/new", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def adverse_event_new(patient_id: int):
    patient = services.get_patient(patient_id)
    form = forms.AdverseEventForm()
    status = 200
    if form.validate_on_submit():
        try:
            followup.report_adverse_event(current_user, patient, term=form.term.data, onset_date=form.onset_date.data,
                                          severity=form.severity.data, serious=form.serious.data,
                                          relatedness=form.relatedness.data, description=form.description.data)
        except RuleViolation as refused:
            _refuse(form, refused, "term")
            status = 422
        else:
            flash(_("Adverse event reported."), "success")
            return redirect(url_for("trial.patient", patient_id=patient.id))
    elif form.errors:
        status = 422
    return render_template("trial/adverse_event_new.html", form=form, patient=patient), status


@bp.route("/adverse-events")
@allow(*STAFF)
def adverse_events():
    return render_template("trial/adverse_events.html", events=followup.adverse_events())


@bp.route("/lots/<lot_identifier>/adverse-events")
@allow(Role.PHARMACIST)
def lot_adverse_events(lot_identifier: str):
    return render_template("trial/lot_adverse_events.html", lot_identifier=lot_identifier,
                           events=followup.aes_for_lot(lot_identifier))


@bp.route("/summary")
@allow(*STAFF)
def summary():
    trial = services.require_trial()
    return render_template("trial/summary.html", trial=trial, data=followup.summary(current_user, trial),
                           group_label=lambda g: followup.group_label(trial, g))


@bp.route("/summary.csv")
@allow(*STAFF)
def summary_csv():
    trial = services.require_trial()
    body = followup.summary_csv(current_user, trial)
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=trial-{trial.registry_number}-endpoints.csv"})


# --- API -----------------------------------------------------------------------------------------

@api.route("/patients/<study_id>")
@allow(*STAFF)
def api_patient(study_id: str):
    """A randomized patient by study ID or kit number; the arm only for users who may see it."""
    patient = services.find_patient(study_id=study_id) or services.find_patient(kit_number=study_id)
    if patient is None:
        raise NotFound(_("No patient with study ID or kit number %(s)s.", s=study_id))
    body: dict[str, Any] = {"study_id": patient.study_id, "kit_number": patient.kit_number,
                            "screening_number": patient.screening_number,
                            "randomized": patient.randomized, "eligibility": patient.eligibility.value,
                            "weight_kg": str(patient.weight_kg)}
    order = orders.active_order(patient)
    body["order"] = None if order is None else {"id": order.id, "status": order.status.value,
                                                "infusion_date": order.infusion_date.isoformat()}
    if may_see_arm(current_user, patient.trial):
        body["arm"] = services.arm_of(patient)
        if order is not None:
            body["order"]["target_cells"] = order.target_cells
    return jsonify(body)

