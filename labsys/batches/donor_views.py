"""Pages for donors (coded ID, screening, markers, QA eligibility) and cord receipt."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer, signatures_for
from labsys.batches import forms, services
from labsys.batches.models import Cord, Deviation, Donor
from labsys.batches.rules import Eligibility, Marker
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.batches.views import STAFF, _local, _page, _refused, bp
from labsys.i18n import gettext as _
from labsys.listing import contains


# ---------------------------------------------------------------- donors
@bp.route("/donors")
@allow(*STAFF)
def donors():
    term = request.args.get("q", "").strip()
    eligibility = request.args.get("eligibility", "")
    query = select(Donor).order_by(Donor.created_at.desc(), Donor.id.desc())
    if term:
        query = query.where(contains(Donor.code, term))  # codes are stored upper case (register_donor)
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
        check = authenticate_form_signer(form, SignatureMeaning.APPROVED)
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
