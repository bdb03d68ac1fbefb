"""Wristband label and chain-of-custody certificate (WeasyPrint PDFs with signed QR codes)."""
from __future__ import annotations

import re

from flask import current_app
from markupsafe import Markup

from labsys.auth.signatures import signatures_for
from labsys.chain_of_custody import services
from labsys.documents.pdf import render_pdf
from labsys.documents.qr import qr_img, qr_svg
from labsys.extensions import db
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
# minimum and maximum content width of every cell (most of the certificate's layout time).
CERTIFICATE_CSS = """
.header .qr { float: right; margin-left: 6mm; text-align: center; }
.header img.qr { display: block; width: 32mm; height: 32mm; }
.header { display: flow-root; }
.vial-facts { display: flow-root; font-size: 8.5pt; margin: 2mm 0; }
.vial-facts p { margin: 0; }
img.vial-qr { float: left; width: 24mm; height: 24mm; margin: 0 4mm 1mm 0; }
.mono { font-family: monospace; font-size: 7.5pt; word-break: break-all; }
table { margin: 2mm 0 4mm; font-size: 8.5pt; table-layout: fixed; }
col.verdict { width: 12mm; }
col.when { width: 36mm; } col.event { width: 25mm; } col.who { width: 34mm; } col.witness { width: 24mm; }
col.temperature { width: 11mm; }
col.name { width: 42mm; } col.meaning { width: 38mm; }
.vial { page-break-inside: avoid; }
.pass { color: #14532d; } .fail { color: #991b1b; font-weight: bold; }
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
                      "qr": qr_img(services.vial_payload(vial), "qr vial-qr"), "events": services.timeline(vial)})
    signatures = signatures_for(dispensing)
    from labsys.chain_of_custody.models import Administration
    from sqlalchemy import select

    administration = db.session.scalar(select(Administration).where(Administration.dispensing_id == dispensing.id))
    payload = services.dispensing_payload(dispensing)
    return {"dispensing": dispensing, "order": order, "patient": patient, "arm": arm, "vials": vials,
            "signatures": signatures, "checks": services.checks_of(dispensing, viewer), "qr": qr_img(payload),
            "payload": payload, "administration": administration,
            "administration_signatures": signatures_for(administration) if administration else [],
            "lab_timezone": current_app.config.get("LAB_TIMEZONE")}


def certificate_pdf(dispensing, viewer) -> bytes:
    return render_pdf("chain_of_custody/pdf/certificate.html", extra_css=CERTIFICATE_CSS,
                      **certificate_context(dispensing, viewer))
