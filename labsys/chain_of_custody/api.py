"""JSON API for scanners and the dispense page: ``/api/v1/scan``, ``/api/v1/dispense/check`` and
the OpenAPI 3 description at ``/api/v1/openapi.json``.

Authentication: a per-user API token (``Authorization: Bearer lsk_...``) or the browser session
(POST with the CSRF token in the ``X-CSRFToken`` header). Bad input answers 4xx with a JSON
reason, never 500. Masked users never receive a treatment arm."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, jsonify, request
from flask_login import current_user
from sqlalchemy import select

from labsys.auth.roles import Role, allow, allow_signed_in
from labsys.batches.models import Box, Vial
from labsys.batches.states import BatchStatus, VialStatus
from labsys.chain_of_custody import services
from labsys.documents import codec
from labsys.extensions import db
from labsys.i18n import gettext as _

bp = Blueprint("custody_api", __name__, url_prefix="/api/v1")

MAX_FIELD = 400


def problem(status: int, message: str, reasons: list[str] | None = None):
    return jsonify({"error": {400: "BadRequest", 404: "NotFound", 422: "Unprocessable"}.get(status, "Error"),
                    "message": message, "reasons": reasons or []}), status


def _json_object() -> tuple[dict | None, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return None, problem(400, _("The request body must be a JSON object."),
                             [_("Send Content-Type: application/json with a JSON object.")])
    return data, None


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def vial_state(facts: services.VialFacts) -> dict:
    vial = facts.vial
    thawed = vial.status == VialStatus.THAWED
    use_by = (facts.thawed_at + dt.timedelta(minutes=services.hold_minutes())
              if thawed and facts.thawed_at is not None else None)
    return {"kind": "vial", "identifier": vial.identifier, "status": vial.status.value,
            "lot": vial.lot_identifier, "lot_status": vial.lot_status.value,
            "lot_selected_for_trial": facts.lot_selected, "location": vial.location,
            "expiry_date": vial.expiry_date.isoformat(), "viable_cells": vial.viable_cells,
            "allocated_kit": facts.allocated_kit, "thawed_at": _iso(facts.thawed_at), "use_by": _iso(use_by)}


def patient_state(patient) -> dict:
    from labsys.trial.masking import arm_name, may_see_arm
    from labsys.trial.services import arm_of

    order = services.order_for_patient(patient)
    body = {"kind": "patient", "study_id": patient.study_id, "kit_number": patient.kit_number,
            "randomized": patient.randomized,
            "order": None if order is None else {"id": order.id, "status": order.status.value,
                                                 "infusion_date": order.infusion_date.isoformat()}}
    if may_see_arm(current_user, patient.trial):
        body["arm"] = arm_name(patient.trial, arm_of(patient))
    return body


@bp.route("/scan", methods=["POST"])
@allow_signed_in
def scan():
    """What a scanned code names and its current state."""
    data, error = _json_object()
    if error:
        return error
    payload = data.get("payload")
    if not isinstance(payload, str) or not payload.strip():
        return problem(400, _("'payload' must be a non-empty string."))
    if len(payload) > MAX_FIELD:
        return problem(422, _("The code does not verify."), [_("too long")])
    verdict = codec.verify(payload)
    if not verdict.valid:
        return problem(422, _("The code does not verify."), [verdict.reason])
    found: dict | None = None
    if verdict.kind == "vial":
        facts = services.vial_facts(verdict.identifier, with_place=True)
        found = vial_state(facts) if facts else None
    elif verdict.kind == "patient":
        patient = services.patient_from_identifier(verdict.identifier)
        found = patient_state(patient) if patient else None
    elif verdict.kind == "box":
        box = db.session.scalar(select(Box).where(Box.code == verdict.identifier))
        if box is not None:
            count = len(list(db.session.scalars(select(Vial.id).where(Vial.box_id == box.id))))
            found = {"kind": "box", "code": box.code, "location": box.location, "vials": count}
    elif verdict.kind == "certificate":
        dispensing = services.find_dispensing(verdict.identifier)
        if dispensing is not None:
            found = {"kind": "certificate", "number": dispensing.number, "study_id": dispensing.study_id,
                     "kit_number": dispensing.kit_number, "dispensed_at": _iso(dispensing.dispensed_at),
                     "vials": dispensing.vial_list}
        else:
            from labsys.batches.models import Batch
            from labsys.release.decisions import decision_of

            batch = db.session.scalar(select(Batch).where(Batch.identifier == verdict.identifier))
            decision = decision_of(batch) if batch is not None else None
            if decision is not None:
                found = {"kind": "certificate", "number": decision.certificate_number, "lot": batch.identifier,
                         "lot_status": BatchStatus(batch.status).value, "decision": decision.decision.value,
                         "decided_at": _iso(decision.decided_at)}
    if found is None:
        return problem(404, _("Nothing in labsys matches this code."), [f"{verdict.kind} {verdict.identifier}"])
    found["verified"] = True
    return jsonify(found)


@bp.route("/dispense/check", methods=["POST"])
@allow(Role.PHARMACIST)
def dispense_check():
    """Every dispensing check for a wristband and vial scans; writes nothing."""
    data, error = _json_object()
    if error:
        return error
    patient, vials = data.get("patient"), data.get("vials")
    reasons = []
    if not isinstance(patient, str) or not patient.strip():
        reasons.append(_("'patient' must be the wristband code (a non-empty string)."))
    if not isinstance(vials, list) or not all(isinstance(v, str) for v in vials):
        reasons.append(_("'vials' must be a list of vial codes (strings)."))
    elif len(vials) > services.MAX_VIALS_PER_SCAN:
        reasons.append(_("At most %(n)d vials per dispensing.", n=services.MAX_VIALS_PER_SCAN))
    if reasons:
        return problem(400, _("The request is malformed."), reasons)
    outcome = services.evaluate(patient[:MAX_FIELD], [v[:MAX_FIELD] for v in vials], dispenser=current_user)
    # Nothing to roll back here: evaluate only reads, and the request's end closes the session
    # (its transaction, if any, is rolled back there; an explicit rollback first expired every
    # record read, ≈ 5 % of the check's time, for nothing).
    return jsonify({"ok": outcome.ok, "checks": [c.as_dict() for c in outcome.checks],
                    "dose": outcome.dose_summary() if outcome.patient is not None else None,
                    "summary": _("All checks passed") if outcome.ok else
                    _("%(n)d check(s) failed", n=sum(1 for c in outcome.checks if not c.passed))})


def openapi_spec() -> dict:
    error = {"$ref": "#/components/schemas/Error"}

    def responses(ok_schema: dict, *codes: int) -> dict:
        body = {"200": {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}}
        texts = {400: "Malformed request", 401: "Not signed in / bad token", 403: "Forbidden or CSRF failure",
                 404: "Unknown code", 422: "Signature does not verify"}
        for code in codes:
            body[str(code)] = {"description": texts[code], "content": {"application/json": {"schema": error}}}
        return body

    return {
        "openapi": "3.0.3",
        "info": {"title": "labsys chain-of-custody API", "version": "1.0.0",
                 "description": "Scanning and dispensing checks. Authenticate with a per-user API token "
                                "(Authorization: Bearer lsk_...) or the browser session with an X-CSRFToken header."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerToken": []}, {"session": []}],
        "paths": {
            "/me": {"get": {"summary": "Who the token or session acts as", "operationId": "me",
                            "responses": responses({"type": "object"}, 401)}},
            "/scan": {"post": {
                "summary": "What a scanned code names and its current state", "operationId": "scan",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ScanRequest"}}}},
                "responses": responses({"$ref": "#/components/schemas/ScanResult"}, 400, 401, 403, 404, 422)}},
            "/dispense/check": {"post": {
                "summary": "Every dispensing check for a wristband and vials (writes nothing)",
                "operationId": "dispenseCheck",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/DispenseCheckRequest"}}}},
                "responses": responses({"$ref": "#/components/schemas/DispenseCheckResult"}, 400, 401, 403)}},
            "/openapi.json": {"get": {"summary": "This description", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3 document"}}}},
        },
        "components": {
            "securitySchemes": {
                "bearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "lsk_..."},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message", "reasons"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"},
                    "reasons": {"type": "array", "items": {"type": "string"}}}},
                "ScanRequest": {"type": "object", "required": ["payload"], "properties": {
                    "payload": {"type": "string", "maxLength": MAX_FIELD, "example": "LS1.VIAL.W0000260001230001...."}}},
                "ScanResult": {"type": "object", "required": ["kind", "verified"], "properties": {
                    "kind": {"type": "string", "enum": ["vial", "patient", "box", "certificate"]},
                    "verified": {"type": "boolean"}, "identifier": {"type": "string"},
                    "status": {"type": "string"}, "lot": {"type": "string"}, "study_id": {"type": "string"},
                    "kit_number": {"type": "string"},
                    "arm": {"type": "string", "description": "Only for users allowed to see treatment arms."}},
                    "additionalProperties": True},
                "DispenseCheckRequest": {"type": "object", "required": ["patient", "vials"], "properties": {
                    "patient": {"type": "string", "description": "Wristband QR payload"},
                    "vials": {"type": "array", "maxItems": services.MAX_VIALS_PER_SCAN,
                              "items": {"type": "string"}}}},
                "Check": {"type": "object", "required": ["rule", "passed", "message"], "properties": {
                    "rule": {"type": "string"}, "passed": {"type": "boolean"}, "message": {"type": "string"}}},
                "DispenseCheckResult": {"type": "object", "required": ["ok", "checks"], "properties": {
                    "ok": {"type": "boolean"}, "summary": {"type": "string"},
                    "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Check"}},
                    "dose": {"type": "object", "nullable": True}}},
            },
        },
    }


@bp.route("/openapi.json")
@allow_signed_in
def openapi():
    return jsonify(openapi_spec())
