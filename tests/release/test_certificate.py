"""The certificate of analysis: rendered as PDF, rasterized at 200 dpi, its QR code decoded and
its signed payload verified and resolved to the lot."""
from __future__ import annotations

import subprocess

import pytest
import zxingcpp
from PIL import Image

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.documents import codec
from labsys.release import decisions

from .conftest import enter_results, passing_potency


@pytest.fixture
def released_lot(lots, users, potency_runs):
    batch = lots.lot()
    enter_results(users, batch, overrides={"STERILITY": ("pending", None)})
    passing_potency(potency_runs, batch, "33.3")
    decisions.decide_lot(users["qa"], batch, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                         "meets specification", None)
    return batch


def _pdf_text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "coa.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True).stdout


def test_the_certificate_qr_code_decodes_to_a_signed_payload_that_resolves_to_the_lot(released_lot, login_as,
                                                                                      tmp_path, db):
    qa = login_as("qa")
    response = qa.get(f"/release/lots/{released_lot.id}/certificate.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    pdf = tmp_path / "coa.pdf"
    pdf.write_bytes(response.data)
    subprocess.run(["pdftoppm", "-r", "200", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True)
    image = Image.open(next(tmp_path.glob("page*.png")))
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1
    payload = found[0].text
    verdict = codec.verify(payload)
    assert verdict.valid and verdict.kind == "certificate" and verdict.identifier == released_lot.identifier
    resolved = qa.get("/release/certificates/resolve", query_string={"payload": payload})
    assert resolved.status_code == 302 and resolved.headers["Location"].endswith(f"/release/lots/{released_lot.id}")
    forged = payload[:-3] + ("AAA" if not payload.endswith("AAA") else "BBB")
    assert qa.get("/release/certificates/resolve", query_string={"payload": forged}).status_code == 422


def test_the_certificate_lists_every_criterion_the_signature_and_the_chain_head(released_lot, login_as, tmp_path,
                                                                              users, db):
    decision = decisions.decision_of(released_lot)
    text = _pdf_text(login_as("qa").get(f"/release/lots/{released_lot.id}/certificate.pdf").data, tmp_path)
    for line in ("Viability at fill", "≥ 80 %", "92.5 %", "Endotoxin", "≤ 0.5 EU/mL", "BV2 potency", "33.3 %",
                 "Sterility", "Pending", decision.certificate_number, "HUC-MSC-RELEASE v1",
                 "Released, results pending", users["qa"].full_name, "Asia/Shanghai"):
        assert line in text, line
    assert decision.chain_head_hash[:40] in text.replace("\n", "").replace(" ", "")
    assert "PR-" in text


def test_the_chain_head_printed_on_the_certificate_is_proved_by_audit_verify_at(released_lot, login_as, tmp_path,
                                                                               app, db):
    import re

    text = _pdf_text(login_as("qa").get(f"/release/lots/{released_lot.id}/certificate.pdf").data, tmp_path)
    printed = re.findall(r"[0-9a-f]{64}", re.sub(r"\s+", "", text))
    assert printed, "the certificate prints the full chain-head hash"
    head = printed[0]
    assert head == decisions.decision_of(released_lot).chain_head_hash
    runner = app.test_cli_runner()
    # Later work extends the chain; the printed head stays provably inside it.
    login_as("qa2")
    db.session.rollback()
    from labsys.audit.services import chain_head

    assert chain_head(db.session) != head
    proved = runner.invoke(args=["audit", "verify", "--at", head])
    assert proved.exit_code == 0 and f"{head} is in the chain" in proved.output, proved.output
    unknown = runner.invoke(args=["audit", "verify", "--at", "0" * 64])
    assert unknown.exit_code == 1 and "is not in the chain" in unknown.output
