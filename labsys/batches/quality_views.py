"""Pages for deviations and reagent lots."""
from __future__ import annotations

import datetime as dt

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_signer, signatures_for
from labsys.batches import forms, services
from labsys.batches.models import Batch, Cord, Deviation, DeviationStatus, Reagent
from labsys.batches.rules import REAGENT_STATUS_LABELS
from labsys.errors import RuleViolation
from labsys.batches.views import STAFF, _page, _refused, bp
from labsys.i18n import gettext as _
from labsys.timefmt import lab_today


# ---------------------------------------------------------------- deviations
@bp.route("/<int:batch_id>/deviations/new", methods=["GET", "POST"])
@allow(*STAFF)
def deviation_new(batch_id: int):
    return _raise_deviation(services.get_or_404(Batch, batch_id), None)


@bp.route("/cords/<int:cord_id>/deviations/new", methods=["GET", "POST"])
@allow(*STAFF)
def cord_deviation_new(cord_id: int):
    return _raise_deviation(None, services.get_or_404(Cord, cord_id))


def _raise_deviation(batch: Batch | None, cord: Cord | None):
    form = forms.DeviationForm()
    if form.validate_on_submit():
        try:
            deviation = services.raise_deviation(current_user, form.description.data, batch=batch, cord=cord)
        except RuleViolation as error:
            return _refused(form, error, "batches/deviation_form.html", batch=batch, cord=cord)
        flash(_("Deviation %(n)s raised.", n=deviation.number), "success")
        return redirect(url_for("batches.deviation_detail", deviation_id=deviation.id))
    return render_template("batches/deviation_form.html", form=form, batch=batch, cord=cord), \
        422 if form.errors else 200


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
                           status_form=forms.ReagentStatusForm(), today=lab_today()), status


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
