"""Certificate of analysis: a WeasyPrint PDF per lot decision with every criterion, its limit,
result and verdict, the potency run, deviations, the QA signature block, the audit chain head at
signing, and a signed QR code that resolves to the lot."""
from __future__ import annotations

from flask import current_app, url_for

from labsys.auth.signatures import signatures_for
from labsys.batches.models import Batch
from labsys.batches.services import deviations_of
from labsys.documents import codec
from labsys.documents.pdf import render_pdf
from labsys.documents.qr import qr_img
from labsys.release import decisions, hooks
from labsys.release.models import ReleaseDecision

CERTIFICATE_CSS = """
h1 { font-size: 15pt; margin: 0 0 2mm; }
table { border-collapse: collapse; width: 100%; margin: 2mm 0 4mm; }
th, td { border: 0.4pt solid #999; padding: 1mm 1.5mm; text-align: left; vertical-align: top; }
th { background: #eee; }
.verdict-pass { color: #14532d; } .verdict-fail, .verdict-oos { color: #991b1b; font-weight: bold; }
.verdict-pending { color: #92400e; }
.header { display: flex; justify-content: space-between; }
.qr img.qr { width: 34mm; height: 34mm; }
.mono { font-family: monospace; font-size: 7.5pt; word-break: break-all; }
"""


def certificate_payload(batch: Batch) -> str:
    """The signed QR payload of a lot's certificate: kind CERT, the lot's donation identifier."""
    return codec.encode("certificate", batch.identifier)


def certificate_pdf(batch: Batch, decision: ReleaseDecision) -> bytes:
    payload = certificate_payload(batch)
    return render_pdf("release/certificate.html", extra_css=CERTIFICATE_CSS, batch=batch, decision=decision,
                      rows=decisions.evaluation_rows(decision), signatures=signatures_for(decision),
                      deviations=deviations_of(batch), potency=hooks.potency_for(batch.identifier),
                      qr=qr_img(payload), payload=payload,
                      resolve_url=url_for("release.resolve_certificate", payload=payload, _external=True),
                      lab_timezone=current_app.config.get("LAB_TIMEZONE"))
