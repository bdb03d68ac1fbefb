"""Wristband label and chain-of-custody certificate (WeasyPrint PDFs with signed QR codes)."""
from __future__ import annotations

import re
from collections import Counter

from flask import current_app
from markupsafe import Markup

from labsys.auth.signatures import signatures_for
from labsys.chain_of_custody import services
from labsys.documents.pdf import render_pdf
from labsys.documents.qr import qr_img, qr_imgs, qr_svg
from labsys.extensions import db
from labsys.timefmt import format_datetime
from labsys.trial.masking import arm_name, may_see_arm, trial_is_masked
from labsys.trial.models import InfusionOrder, Patient

WRISTBAND_CSS = """
@page { size: 110mm 34mm; margin: 2mm; }
table.band, table.band td { border: 0; padding: 0; }
table.band td.code { width: 29mm; }
table.band td.code svg { display: block; width: 28mm; height: 28mm; }
table.band td.text { font-size: 8.5pt; line-height: 1.3; vertical-align: middle; padding-left: 2mm; }
"""

# Fixed table layout with set column widths: WeasyPrint's automatic layout first measures the
# minimum and maximum content width of every cell (most of the certificate's layout time). Each
# table cell costs WeasyPrint about a millisecond whatever it holds, so a vial's checks are lines
# of one paragraph (verdict, tab, words) and the custody events one table for all vials. Every
# element costs too (a coloured span round each of 80 "Pass" verdicts was a sixth of the time): a
# passed check's verdict is plain text, a failed one's bold red.
CERTIFICATE_CSS = """
.header .qr { float: right; margin-left: 6mm; text-align: center; }
.header img.qr { display: block; width: 32mm; height: 32mm; }
.header { display: flow-root; }
.mono { font-family: monospace; font-size: 7.5pt; word-break: break-all; }
table { margin: 2mm 0 4mm; font-size: 8.5pt; table-layout: fixed; }
col.verdict { width: 12mm; }
col.when { width: 31mm; } col.event { width: 24mm; } col.vials { width: 30mm; } col.who { width: 28mm; }
col.witness { width: 19mm; } col.temperature { width: 9mm; }
col.name { width: 42mm; } col.meaning { width: 38mm; }
td.vials { white-space: pre-line; }
p.note { font-size: 8.5pt; color: #555; margin: 0 0 2mm; }
.vial { display: flow-root; font-size: 8.5pt; margin: 0 0 1.5mm; padding-top: 1.5mm; border-top: 0.5pt solid #888;
        page-break-inside: avoid; }
.vial h3 { font-size: 9.5pt; margin: 0 0 0.5mm; }
.vial p { margin: 0 0 1mm; }
img.vial-qr { float: left; width: 24mm; height: 24mm; }
.vial-text { margin-left: 28mm; }
p.vial-checks { white-space: pre-wrap; tab-size: 10mm; }
.fail { color: #991b1b; font-weight: bold; }
"""


def sized_qr(payload: str, size: str) -> Markup:
    """A vector QR code with its printed size set on the <svg> element itself."""
    svg = str(qr_svg(payload))
    svg = re.sub(r'^<svg width="[^"]+" height="[^"]+"', f'<svg width="{size}" height="{size}"', svg, count=1)
    return Markup(svg)


def wristband_pdf(patient: Patient) -> bytes:
    """The patient's wristband: signed QR (kind patient; study ID and kit number), no arm, no name."""
    payload = services.patient_payload(patient)
    return render_pdf("chain_of_custody/pdf/wristband.html", extra_css=WRISTBAND_CSS, patient=patient,
                      qr=sized_qr(payload, "28mm"), payload=payload)


# The checks of one scanned vial (rules.vial_checks): they start with the code's verification and
# name the vial; the lot's release check is among them.
VIAL_CHECK_RULES = frozenset({"vial_signature_valid", "vial_exists", "vial_scanned_once", "vial_not_already_dispensed",
                              "vial_allocated_to_patient", "lot_released", "vial_not_expired",
                              "vial_thawed_within_hold_time"})


def split_checks(checks: list[dict], identifiers: list[str]) -> tuple[list[dict], dict[str, list[dict]]]:
    """The recorded checks as (those of the dispensing as a whole, identifier → that vial's checks).

    The checks are recorded in scanning order: the wristband's, then each vial's (a run of vial
    rules that begins with its code's verification, whose words name the vial), then the dose,
    endotoxin and witness checks. A vial's run goes to the vial its first check names; a run that
    names none of ``identifiers`` stays with the dispensing's checks, so every check is printed
    once, in its recorded order within its group."""
    general: list[dict] = []
    by_vial: dict[str, list[dict]] = {identifier: [] for identifier in identifiers}
    patterns = [(identifier, re.compile(rf"(?<![0-9A-Za-z]){re.escape(identifier)}(?![0-9A-Za-z])"))
                for identifier in identifiers]
    owner: str | None = None
    for check in checks:
        rule = check.get("rule")
        if rule == "vial_signature_valid":
            owner = next((i for i, pattern in patterns if pattern.search(check.get("message") or "")), None)
        elif rule not in VIAL_CHECK_RULES:
            owner = None
        (by_vial[owner] if owner is not None else general).append(check)
    return general, by_vial


def custody_rows(items: list[dict]) -> list[dict]:
    """Every custody event of every vial, as the certificate prints it (time to the second, event,
    who, witness, from, to, °C), one row per printed event with the vials it happened to (in the
    certificate's vial order), ordered by time. Vials shipped, received or dispensed together share
    a row; an event of one vial alone has a row of its own. A vial with two events that print
    the same keeps both (two rows)."""
    rows: dict[tuple, dict] = {}
    for item in items:
        occurrences: Counter = Counter()
        for event in item["events"]:
            shown = (format_datetime(event.at, seconds=True), event.event_type, event.actor_name,
                     event.witness_name or None, event.from_location or None, event.to_location or None,
                     None if event.temperature_c is None else str(event.temperature_c))
            occurrences[shown] += 1
            key = (*shown, occurrences[shown])
            row = rows.get(key)
            if row is None:
                row = rows[key] = {"when": shown[0], "event": event, "vials": [], "order": (event.at, event.id)}
            row["vials"].append(item["vial"].identifier)
            row["order"] = min(row["order"], (event.at, event.id))
    return sorted(rows.values(), key=lambda row: row["order"])


def certificate_context(dispensing, viewer) -> dict:
    order = db.session.get(InfusionOrder, dispensing.order_id)
    patient = db.session.get(Patient, dispensing.patient_id)
    trial = patient.trial
    show_arm = (not trial_is_masked(trial)) and may_see_arm(viewer, trial)
    arm = None
    if show_arm:
        from labsys.trial.services import arm_of

        arm = arm_name(trial, arm_of(patient))
    from labsys.release.decisions import decision_of

    vials = []
    dispensed = services.vials_of_dispensing(dispensing)
    codes = qr_imgs([services.vial_payload(vial) for vial in dispensed], "qr vial-qr")  # made together
    for vial, code in zip(dispensed, codes):
        decision = decision_of(vial.batch)
        vials.append({"vial": vial, "lot": vial.batch.identifier,
                      "release_reference": decision.certificate_number if decision else "—",
                      "qr": code, "events": services.timeline(vial)})
    checks = services.checks_of(dispensing, viewer)
    dispensing_checks, vial_checks = split_checks(checks, [item["vial"].identifier for item in vials])
    for item in vials:
        item["checks"] = vial_checks[item["vial"].identifier]
    signatures = signatures_for(dispensing)
    from labsys.chain_of_custody.models import Administration
    from sqlalchemy import select

    administration = db.session.scalar(select(Administration).where(Administration.dispensing_id == dispensing.id))
    payload = services.dispensing_payload(dispensing)
    return {"dispensing": dispensing, "order": order, "patient": patient, "arm": arm, "vials": vials,
            "signatures": signatures, "checks": checks, "dispensing_checks": dispensing_checks,
            "custody_rows": custody_rows(vials), "qr": qr_img(payload),
            "payload": payload, "administration": administration,
            "administration_signatures": signatures_for(administration) if administration else [],
            "lab_timezone": current_app.config.get("LAB_TIMEZONE")}


def certificate_pdf(dispensing, viewer) -> bytes:
    return render_pdf("chain_of_custody/pdf/certificate.html", extra_css=CERTIFICATE_CSS,
                      **certificate_context(dispensing, viewer))
