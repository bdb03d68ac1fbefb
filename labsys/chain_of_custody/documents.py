"""Wristband label and chain-of-custody certificate (WeasyPrint PDFs with signed QR codes)."""
from __future__ import annotations

from flask import current_app

from labsys.auth.signatures import signatures_for
from labsys.chain_of_custody import services
from labsys.documents.pdf import render_pdf
from labsys.documents.qr import qr_svg
from labsys.extensions import db
from labsys.trial.masking import arm_name, may_see_arm, trial_is_masked
from labsys.trial.models import InfusionOrder, Patient

WRISTBAND_CSS = """
@page { size: 100mm 30mm; margin: 2mm; }
.band { display: flex; align-items: center; gap: 3mm; }
.band svg { width: 25mm; height: 25mm; }
.band .text { font-size: 9pt; line-height: 1.35; }
"""

CERTIFICATE_CSS = """
.header { display: flex; justify-content: space-between; gap: 6mm; }
.qr svg { width: 32mm; height: 32mm; }
.vial-qr svg { width: 24mm; height: 24mm; }
.mono { font-family: monospace; font-size: 7.5pt; word-break: break-all; }
table { margin: 2mm 0 4mm; font-size: 8.5pt; }
.vial { page-break-inside: avoid; }
.pass { color: #14532d; } .fail { color: #991b1b; font-weight: bold; }
"""


def wristband_pdf(patient: Patient) -> bytes:
    """The patient's wristband: signed QR (kind patient; study ID and kit number), no arm, no name."""
    payload = services.patient_payload(patient)
    return render_pdf("chain_of_custody/pdf/wristband.html", extra_css=WRISTBAND_CSS, patient=patient,
                      qr=qr_svg(payload, border=4), payload=payload)


def certificate_context(dispensing, viewer) -> dict:
    order = db.session.get(InfusionOrder, dispensing.order_id)
    patient = db.session.get(Patient, dispensing.patient_id)
    trial = patient.trial
    show_arm = (not trial_is_masked(trial)) and may_see_arm(viewer, trial)
    arm = None
    if show_arm:
        from labsys.trial.services import arm_of

        arm = arm_name(trial, arm_of(patient))
    vials = []
    for vial in services.vials_of_dispensing(dispensing):
        from labsys.release.decisions import decision_of

        decision = decision_of(vial.batch)
        vials.append({"vial": vial, "lot": vial.batch.identifier,
                      "release_reference": decision.certificate_number if decision else "—",
                      "qr": qr_svg(services.vial_payload(vial), box_size=6), "events": services.timeline(vial)})
    signatures = signatures_for(dispensing)
    from labsys.chain_of_custody.models import Administration
    from sqlalchemy import select

    administration = db.session.scalar(select(Administration).where(Administration.dispensing_id == dispensing.id))
    payload = services.dispensing_payload(dispensing)
    return {"dispensing": dispensing, "order": order, "patient": patient, "arm": arm, "vials": vials,
            "signatures": signatures, "checks": services.checks_of(dispensing), "qr": qr_svg(payload),
            "payload": payload, "administration": administration,
            "administration_signatures": signatures_for(administration) if administration else [],
            "lab_timezone": current_app.config.get("LAB_TIMEZONE")}


def certificate_pdf(dispensing, viewer) -> bytes:
    return render_pdf("chain_of_custody/pdf/certificate.html", extra_css=CERTIFICATE_CSS,
                      **certificate_context(dispensing, viewer))
