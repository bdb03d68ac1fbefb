"""Vial and box label sheets: WeasyPrint PDFs with a QR code per label carrying a signed
payload (labsys.documents.codec). The payload holds kind, identifier and key id — never a name."""
from __future__ import annotations

from labsys.batches.models import Batch, Box
from labsys.batches.vials import vials_of
from labsys.documents import codec
from labsys.documents.isbt import din_of, mod37_2_check
from labsys.documents.pdf import render_pdf
from labsys.documents.qr import qr_imgs, qr_svg


def vial_labels(batch: Batch) -> list[dict]:
    vials = vials_of(batch)
    payloads = [codec.encode("vial", vial.identifier) for vial in vials]
    return [{"vial": vial, "payload": payload, "qr": qr}
            for vial, payload, qr in zip(vials, payloads, qr_imgs(payloads))]  # the codes made together


def vial_label_sheet_pdf(batch: Batch) -> bytes:
    """An A4 sheet of vial labels (3 across), each with its QR code, identifier and check character."""
    return render_pdf("batches/pdf/vial_labels.html", batch=batch, labels=vial_labels(batch))


def box_label_pdf(box: Box) -> bytes:
    payload = codec.encode("box", box.code)
    return render_pdf("batches/pdf/box_label.html", box=box, payload=payload, qr=qr_svg(payload, box_size=4))


def describe_payload(payload: str) -> dict:
    """What ``labels verify`` prints: kind, identifier, check character, key id and validity."""
    verdict = codec.verify(payload)
    din = din_of(verdict.identifier) if verdict.identifier else None
    return {
        "kind": verdict.kind,
        "identifier": verdict.identifier,
        "check_character": mod37_2_check(din) if din else None,
        "key_id": verdict.key_id,
        "valid": verdict.valid,
        "reason": verdict.reason,
    }
