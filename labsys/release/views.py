"""Pages of the release feature: QA work queue, lot review and decision, QC result entry and
verification, specifications, recalls, certificate of analysis and trial-lot selection. Views
parse a form, call one service and render or redirect; a refused rule re-renders the form with
field errors (422) and the typed values kept."""
from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select

from labsys.audit.models import AuditEntry
from labsys.auth.models import SignatureMeaning
from labsys.auth.roles import Role, allow
from labsys.auth.signatures import authenticate_form_signer, signatures_for
from labsys.batches.models import Batch, Deviation, DeviationStatus
from labsys.batches.services import deviations_of
from labsys.batches.states import BATCH_STATUS_LABELS, VIAL_STATUS_LABELS, BatchStatus, VialStatus
from labsys.errors import RuleViolation
from labsys.db import count_of
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.listing import contains, page_of, search_term
from labsys.release import decisions, forms, hooks, results, selection, specs
from labsys.release.defaults import FLOW_PANEL, MARKER_NAMES, STERILITY_TEST_CODE
from labsys.release.models import (QCResult, ResultAttachment, Specification, SpecificationVersion, SpecCriterion,
                                   SpecStatus)
from labsys.release.rules import POTENCY_TEST_CODE, Verdict

bp = Blueprint("release", __name__, url_prefix="/release")
STAFF = (Role.TECHNICIAN, Role.QA)

@bp.app_context_processor
def release_helpers():
    from labsys.i18n import N_, gettext

    # Translated when a template asks (every page renders this processor; few show verdicts).
    labels = {Verdict.PASS: N_("Pass"), Verdict.FAIL: N_("Fail"), Verdict.PENDING: N_("Pending"),
              Verdict.OOS: N_("Out of specification")}
    spec_labels = {SpecStatus.DRAFT: N_("Draft"), SpecStatus.APPROVED: N_("Approved"),
                   SpecStatus.SUPERSEDED: N_("Superseded")}

    def outcome_message(outcome) -> str:
        message_id = outcome["message_id"] if isinstance(outcome, dict) else outcome.message_id
        params = outcome["params"] if isinstance(outcome, dict) else outcome.params
        return gettext(message_id, **dict(params))

    return {"verdict_label": lambda v: gettext(labels[Verdict(v)]),
            "spec_status_label": lambda s: gettext(spec_labels[SpecStatus(s)]),
            "release_batch_status_label": lambda s: BATCH_STATUS_LABELS[BatchStatus(s)],
            "release_vial_status_label": lambda s: VIAL_STATUS_LABELS[VialStatus(s)],
            "outcome_message": outcome_message, "rule_name": lambda name: gettext(name)}


def queue_counts() -> dict:
    return {
        "awaiting_review": db.session.scalar(count_of(Batch).where(Batch.status == BatchStatus.QUARANTINE)),
        "awaiting_verification": len(results.results_awaiting_verification()),
        "open_deviations": db.session.scalar(count_of(Deviation).where(
            Deviation.status == DeviationStatus.OPEN)),
        "pending_sterility": db.session.scalar(count_of(QCResult).where(
            QCResult.test_code == STERILITY_TEST_CODE, QCResult.pending.is_(True),
            QCResult.superseded_by_id.is_(None))),
        "released_pending": db.session.scalar(count_of(Batch).where(
            Batch.status == BatchStatus.RELEASED_PENDING)),
    }


def panel_context() -> dict:
    return queue_counts()


def _batch(batch_id: int) -> Batch:
    return specs.get_or_404(Batch, batch_id)


def _refused(form, error: RuleViolation, template: str, **context):
    forms.apply_problems(form, error)
    return render_template(template, form=form, **context), 422


# ---------------------------------------------------------------- QA work queue
@bp.route("/")
@allow(Role.QA)
def queue():
    return render_template("release/queue.html", counts=queue_counts(), awaiting=decisions.lots_awaiting_decision(),
                           pending_lots=decisions.lots_pending_results(),
                           unverified=results.results_awaiting_verification(),
                           open_deviations=list(db.session.scalars(select(Deviation).where(
                               Deviation.status == DeviationStatus.OPEN).order_by(Deviation.raised_at))),
                           recalls=decisions.recalls(), batches={b.id: b for b in db.session.scalars(select(Batch))})


# ---------------------------------------------------------------- review and decision
def _audit_since_fill(batch: Batch) -> list[AuditEntry]:
    if batch.fill is None:
        return []
    result_ids = [str(r.id) for r in results.all_results(batch)]
    vial_ids = [str(v.id) for v in batch.vials]
    decision = decisions.decision_of(batch)
    conditions = [(AuditEntry.entity_type == "batches") & (AuditEntry.entity_id == str(batch.id))]
    if result_ids:
        conditions.append((AuditEntry.entity_type == "qc_results") & AuditEntry.entity_id.in_(result_ids))
    if vial_ids:
        conditions.append((AuditEntry.entity_type == "vials") & AuditEntry.entity_id.in_(vial_ids))
    deviation_ids = [str(d.id) for d in deviations_of(batch)]
    if deviation_ids:
        conditions.append((AuditEntry.entity_type == "deviations") & AuditEntry.entity_id.in_(deviation_ids))
    if decision is not None:
        conditions.append((AuditEntry.entity_type == "release_decisions") & (AuditEntry.entity_id == str(decision.id)))
    # Creation entries carry no entity id (it is assigned in the flush): match them on batch_id.
    conditions.append(AuditEntry.entity_type.in_(("qc_results", "release_decisions", "recalls", "trial_lot_selections"))
                      & AuditEntry.entity_id.is_(None)
                      & (AuditEntry.new_values.like(f'%"batch_id":{batch.id},%')
                         | AuditEntry.new_values.like(f'%"batch_id":{batch.id}}}%')))
    return list(db.session.scalars(select(AuditEntry).where(
        AuditEntry.recorded_at >= batch.fill.filled_at, or_(*conditions)).order_by(AuditEntry.seq).limit(500)))


def _review_context(batch: Batch, form=None) -> dict:
    review = decisions.review_of(batch)
    decision = decisions.decision_of(batch)
    involved = results.results_entered_or_verified_by(current_user, batch)
    return {"batch": batch, "review": review, "decision": decision,
            "decision_signatures": signatures_for(decision) if decision else [],
            "results": results.current_results(batch), "deviations": deviations_of(batch),
            "potency": hooks.potency_for(batch.identifier), "audit": _audit_since_fill(batch),
            "involved": involved, "form": form or forms.DecisionForm(expected_version=batch.version),
            "recall": decisions.recall_of(batch), "potency_code": POTENCY_TEST_CODE}


@bp.route("/lots/<int:batch_id>")
@allow(Role.QA)
def review(batch_id: int):
    return render_template("release/review.html", **_review_context(_batch(batch_id)))


@bp.route("/lots/<int:batch_id>/decide", methods=["POST"])
@allow(Role.QA)
def decide(batch_id: int):
    batch = _batch(batch_id)
    form = forms.DecisionForm()
    release = form.decision.data == "release"
    if form.decision.data not in ("release", "reject"):
        form.decision.errors = [_("Choose release or reject.")]
    if not form.validate_on_submit() or form.decision.errors:
        return render_template("release/review.html", **_review_context(batch, form)), 422
    check = authenticate_form_signer(form, SignatureMeaning.RELEASED if release else SignatureMeaning.REJECTED)
    try:
        expected = int(form.expected_version.data) if form.expected_version.data else None
    except ValueError:
        expected = None
    try:
        decision = decisions.decide_lot(current_user, batch, release, check, form.sign_comment.data, expected)
    except RuleViolation as error:
        form.form_errors.append(error.message)
        form.form_errors.extend(error.reasons)
        return render_template("release/review.html", **_review_context(batch, form)), error.status_code
    flash(_("Lot %(id)s: %(decision)s.", id=batch.identifier,
            decision=BATCH_STATUS_LABELS[BatchStatus(decision.decision.value)]), "success")
    return redirect(url_for("release.review", batch_id=batch.id))


# ---------------------------------------------------------------- QC results
@bp.route("/results")
@allow(*STAFF)
def results_index():
    term = search_term()
    query = select(Batch).where(Batch.status.in_(results.OPEN_FOR_RESULTS)).order_by(Batch.identifier)
    if term:
        query = query.where(contains(func.upper(Batch.identifier), term))
    page = page_of(query)
    unverified = results.results_awaiting_verification()
    batch_ids = {r.batch_id for r in unverified}
    batches = {b.id: b for b in db.session.scalars(select(Batch).where(Batch.id.in_(batch_ids)))} if batch_ids else {}
    return render_template("release/results_index.html", page=page, term=term, unverified=unverified,
                           batches=batches)


def _result_choices(form, version: SpecificationVersion | None) -> None:
    form.test_code.choices = [(c.test_code, f"{c.name} ({c.test_code})") for c in (version.criteria if version else [])
                              if c.test_code != POTENCY_TEST_CODE]


def _attachment(field) -> results.Attachment | None:
    upload = field.data
    if upload is None or not getattr(upload, "filename", ""):
        return None
    return results.Attachment(upload.filename, upload.mimetype or "application/octet-stream", upload.read())


def _input(form, test_code: str | None = None) -> results.ResultInput:
    return results.ResultInput(test_code=test_code or form.test_code.data or "", value=form.value.data,
                               unit=form.unit.data, performed_by=form.performed_by.data or "",
                               performed_on=form.performed_on.data, method=form.method.data,
                               instrument=form.instrument.data, pending=bool(form.pending.data),
                               attachment=_attachment(form.raw_data))


def _lot_results_context(batch: Batch, form=None, panel_form=None) -> dict:
    version = specs.applicable_version(batch)
    form = form or forms.ResultForm()
    _result_choices(form, version)
    return {"batch": batch, "version": version, "form": form, "panel_form": panel_form or forms.FlowPanelForm(),
            "current": results.current_results(batch), "history": results.all_results(batch),
            "panel": [(code, MARKER_NAMES[code]) for code in FLOW_PANEL],
            "units": {c.test_code: c.unit for c in (version.criteria if version else [])}}


@bp.route("/lots/<int:batch_id>/results", methods=["GET", "POST"])
@allow(*STAFF)
def lot_results(batch_id: int):
    batch = _batch(batch_id)
    context = _lot_results_context(batch)
    form = context["form"]
    if request.method == "POST":
        if not form.validate_on_submit():
            return render_template("release/lot_results.html", **context), 422
        try:
            result = results.enter_result(current_user, batch, _input(form))
        except RuleViolation as error:
            return _refused(form, error, "release/lot_results.html", **{k: v for k, v in context.items() if k != "form"})
        flash(_("Result for %(code)s saved; a second person must verify it.", code=result.test_code), "success")
        return redirect(url_for("release.lot_results", batch_id=batch.id))
    return render_template("release/lot_results.html", **context)


def _panel_problems(form, error: RuleViolation) -> None:
    """Problems of marker ``cd73`` land on field ``cd73_value``; shared fields on their own field."""
    for field_name, message in getattr(error, "problems", None) or [(None, error.message)]:
        marker, _sep, name = (field_name or "").partition("-")
        if name in ("performed_by", "performed_on", "raw_data", "method", "instrument"):
            field = getattr(form, name)
        else:
            field = getattr(form, f"{marker}_value", None)
        if field is None:
            form.form_errors.append(message)
        elif message not in field.errors:
            field.errors = list(field.errors) + [message]


@bp.route("/lots/<int:batch_id>/flow-panel", methods=["POST"])
@allow(*STAFF)
def flow_panel(batch_id: int):
    batch = _batch(batch_id)
    panel_form = forms.FlowPanelForm()
    context = _lot_results_context(batch, panel_form=panel_form)
    if not panel_form.validate_on_submit():
        return render_template("release/lot_results.html", **context), 422
    attachment = _attachment(panel_form.raw_data)
    version = context["version"]
    entries = [results.ResultInput(test_code=code, value=getattr(panel_form, f"{code.lower()}_value").data,
                                   unit=(version.criterion(code).unit if version and version.criterion(code) else "%"),
                                   performed_by=panel_form.performed_by.data or "",
                                   performed_on=panel_form.performed_on.data, method=panel_form.method.data,
                                   instrument=panel_form.instrument.data,
                                   attachment=attachment if index == 0 else None)
               for index, code in enumerate(FLOW_PANEL)]
    try:
        results.enter_panel(current_user, batch, entries)
    except RuleViolation as error:
        _panel_problems(panel_form, error)
        return render_template("release/lot_results.html", **context), 422
    flash(_("Flow cytometry panel saved (%(n)d markers); a second person must verify it.", n=len(FLOW_PANEL)),
          "success")
    return redirect(url_for("release.lot_results", batch_id=batch.id))


@bp.route("/results/<int:result_id>/verify", methods=["POST"])
@allow(*STAFF)
def verify(result_id: int):
    result = specs.get_or_404(QCResult, result_id)
    form = forms.VerifyForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        results.verify_result(current_user, result)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "danger")
        return redirect(url_for("release.lot_results", batch_id=result.batch_id)), 303
    flash(_("Result %(code)s verified.", code=result.test_code), "success")
    return redirect(url_for("release.lot_results", batch_id=result.batch_id))


@bp.route("/results/<int:result_id>/correct", methods=["GET", "POST"])
@allow(*STAFF)
def correct(result_id: int):
    result = specs.get_or_404(QCResult, result_id)
    batch = _batch(result.batch_id)
    form = forms.CorrectionForm(obj=None if request.method == "POST" else result)
    version = db.session.get(SpecificationVersion, result.specification_version_id)
    _result_choices(form, version)
    if request.method == "GET":
        form.test_code.data = result.test_code
        form.value.data = "" if result.pending else (
            str(result.numeric_value.normalize()) if result.numeric_value is not None else result.text_value)
    context = {"result": result, "batch": batch}
    if request.method == "POST":
        if not form.validate_on_submit():
            return render_template("release/correct.html", form=form, **context), 422
        try:
            new = results.correct_result(current_user, result, _input(form, result.test_code), form.reason.data)
        except RuleViolation as error:
            return _refused(form, error, "release/correct.html", **context)
        flash(_("Result %(code)s corrected; the old value is kept.", code=new.test_code), "success")
        return redirect(url_for("release.lot_results", batch_id=batch.id))
    return render_template("release/correct.html", form=form, **context)


@bp.route("/attachments/<int:attachment_id>")
@allow(*STAFF)
def attachment(attachment_id: int):
    record = specs.get_or_404(ResultAttachment, attachment_id)
    return Response(record.content, mimetype="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{record.filename}"',
                             "X-Content-SHA256": record.sha256})


# ---------------------------------------------------------------- specifications
@bp.route("/specifications")
@allow(*STAFF)
def specifications():
    return render_template("release/specifications.html",
                           specifications=list(db.session.scalars(select(Specification).order_by(Specification.code))),
                           draft_form=forms.SpecDraftForm())


@bp.route("/specifications/versions/<int:version_id>")
@allow(*STAFF)
def spec_version(version_id: int):
    version = specs.get_or_404(SpecificationVersion, version_id)
    return render_template("release/spec_version.html", version=version, signatures=signatures_for(version),
                           criterion_form=forms.CriterionForm(), approve_form=forms.ApproveForm())


@bp.route("/specifications/<int:specification_id>/drafts", methods=["POST"])
@allow(Role.QA)
def new_draft(specification_id: int):
    specification = specs.get_or_404(Specification, specification_id)
    form = forms.SpecDraftForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        version = specs.new_draft(current_user, specification, form.change_summary.data or "")
    except RuleViolation as error:
        return _refused(form, error, "release/specifications.html",
                        specifications=list(db.session.scalars(select(Specification))), draft_form=form)
    return redirect(url_for("release.spec_version", version_id=version.id))


def _criterion_input(form) -> specs.CriterionInput:
    return specs.CriterionInput(test_code=form.test_code.data or "", name=form.name.data or "", kind=form.kind.data,
                                unit=form.unit.data, lower_limit=form.lower_limit.data,
                                upper_limit=form.upper_limit.data, expected_text=form.expected_text.data,
                                may_be_pending=bool(form.may_be_pending.data), method=form.method.data)


@bp.route("/specifications/versions/<int:version_id>/criteria", methods=["POST"])
@bp.route("/specifications/versions/<int:version_id>/criteria/<int:criterion_id>", methods=["POST"])
@allow(Role.QA)
def save_criterion(version_id: int, criterion_id: int | None = None):
    version = specs.get_or_404(SpecificationVersion, version_id)
    criterion = specs.get_or_404(SpecCriterion, criterion_id) if criterion_id else None
    form = forms.CriterionForm()
    context = {"version": version, "signatures": signatures_for(version), "approve_form": forms.ApproveForm()}
    if not form.validate_on_submit():
        return render_template("release/spec_version.html", criterion_form=form, **context), 422
    try:
        specs.save_criterion(current_user, version, _criterion_input(form), criterion)
    except RuleViolation as error:
        forms.apply_problems(form, error)
        return render_template("release/spec_version.html", criterion_form=form, **context), error.status_code
    flash(_("Criterion saved."), "success")
    return redirect(url_for("release.spec_version", version_id=version.id))


@bp.route("/specifications/versions/<int:version_id>/approve", methods=["POST"])
@allow(Role.QA)
def approve_version(version_id: int):
    version = specs.get_or_404(SpecificationVersion, version_id)
    form = forms.ApproveForm()
    context = {"version": version, "signatures": signatures_for(version), "criterion_form": forms.CriterionForm()}
    if not form.validate_on_submit():
        return render_template("release/spec_version.html", approve_form=form, **context), 422
    check = authenticate_form_signer(form, SignatureMeaning.APPROVED)
    try:
        specs.approve_version(current_user, version, check)
    except RuleViolation as error:
        form.form_errors.append(error.message)
        return render_template("release/spec_version.html", approve_form=form, **context), error.status_code
    flash(_("Version %(n)d approved; the previous version is superseded.", n=version.version_number), "success")
    return redirect(url_for("release.spec_version", version_id=version.id))


# ---------------------------------------------------------------- recall
@bp.route("/lots/<int:batch_id>/recall")
@allow(Role.QA)
def recall(batch_id: int):
    batch = _batch(batch_id)
    record = decisions.recall_of(batch)
    if record is None:
        abort(404)
    return render_template("release/recall.html", batch=batch, recall=record,
                           dispensed=decisions.dispensed_vials(batch),
                           patient_lookup=hooks.patient_lookup_available(),
                           recalled_vials=[v for v in batch.vials if VialStatus(v.status) == VialStatus.RECALLED])


# ---------------------------------------------------------------- certificate of analysis
@bp.route("/lots/<int:batch_id>/certificate.pdf")
@allow(*STAFF)
def certificate(batch_id: int):
    from labsys.release.certificate import certificate_pdf

    batch = _batch(batch_id)
    decision = decisions.decision_of(batch)
    if decision is None:
        abort(404)
    pdf = certificate_pdf(batch, decision)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{decision.certificate_number}.pdf"'})


@bp.route("/certificates/resolve")
@allow(*STAFF)
def resolve_certificate():
    """Where a scanned certificate QR code leads: verify the signature, then open the lot."""
    from labsys.documents import codec

    verdict = codec.verify(request.args.get("payload", ""))
    if not verdict.valid or verdict.kind != "certificate":
        return render_template("errors/generic.html", status=422, title=_("Refused"),
                               message=_("This certificate code is not valid."), reasons=[verdict.reason]), 422
    batch = db.session.scalar(select(Batch).where(Batch.identifier == verdict.identifier))
    if batch is None:
        abort(404)
    return redirect(url_for("release.review" if current_user.has_role(Role.QA) else "release.lot_results",
                            batch_id=batch.id))


# ---------------------------------------------------------------- trial lot selection
@bp.route("/selection", methods=["GET"])
@allow(Role.QA)
def lot_selection():
    return render_template("release/selection.html", candidates=selection.candidates(),
                           form=forms.SelectionForm())


@bp.route("/selection/<int:batch_id>", methods=["POST"])
@allow(Role.QA)
def select_lot(batch_id: int):
    batch = _batch(batch_id)
    form = forms.SelectionForm()
    if not form.validate_on_submit():
        return render_template("release/selection.html", candidates=selection.candidates(), form=form,
                               form_batch_id=batch.id), 422
    check = authenticate_form_signer(form, SignatureMeaning.APPROVED)
    try:
        selection.select_for_trial(current_user, batch, check)
    except RuleViolation as error:
        flash(" ".join([error.message, *error.reasons]), "danger")
        return render_template("release/selection.html", candidates=selection.candidates(), form=form,
                               form_batch_id=batch.id), error.status_code
    flash(_("Lot %(id)s selected for the trial.", id=batch.identifier), "success")
    return redirect(url_for("release.lot_selection"))
