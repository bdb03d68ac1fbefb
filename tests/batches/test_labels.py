"""Labels prove they scan: the PDF sheet is rasterized (pdftoppm) and every QR code is decoded with
a real decoder (zxing-cpp) and verified; the CLI prints JSON and exits 1 on a bad signature."""
import json
import subprocess

import pytest
import zxingcpp
from PIL import Image

from labsys.batches.labels import box_label_pdf, vial_label_sheet_pdf
from labsys.batches.vials import label_prints_of, vials_of
from labsys.documents import codec
from labsys.documents.isbt import mod37_2_check


@pytest.fixture(params=["sqlite"])
def engine_name(request):
    """Rendering and scanning labels is engine-independent: these run on SQLite only; label
    accounting is exercised on both engines in test_services.py. This keeps the PostgreSQL leg short."""
    return request.param


@pytest.fixture(autouse=True)
def signing_key(tmp_path, monkeypatch):
    monkeypatch.setenv("LABSYS_SIGNING_KEY_FILE", str(tmp_path / "key.pem"))
    codec._keyrings.clear()
    yield
    codec._keyrings.clear()


def decode_pdf(pdf: bytes, directory) -> list[str]:
    path = directory / "labels.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", str(path), str(directory / "page")], check=True)
    texts = []
    for page in sorted(directory.glob("page*.png")):
        texts += [result.text for result in zxingcpp.read_barcodes(Image.open(page))]
    return texts


def test_every_vial_label_scans_and_its_signature_holds(db, lab, tmp_path):
    batch = lab.filled(vials=24)  # more than one page
    payloads = decode_pdf(vial_label_sheet_pdf(batch), tmp_path)
    verdicts = [codec.verify(p) for p in payloads]
    assert all(v.valid for v in verdicts)
    assert sorted(v.identifier for v in verdicts) == sorted(v.identifier for v in vials_of(batch))
    assert {v.kind for v in verdicts} == {"vial"}


def test_a_box_label_scans(db, lab, tmp_path):
    from labsys.batches import vials as vial_services

    box = vial_services.create_box(lab.tech, vial_services.create_rack(
        lab.tech, vial_services.create_tank(lab.tech, "T"), "R"), "BX-7", 9, 9)
    [payload] = decode_pdf(box_label_pdf(box), tmp_path)
    verdict = codec.verify(payload)
    assert verdict.valid and (verdict.kind, verdict.identifier) == ("box", "BX-7")


def test_labels_verify_prints_json_and_exits_by_validity(db, lab, app):
    batch = lab.filled(vials=1)
    vial = vials_of(batch)[0]
    payload = codec.encode("vial", vial.identifier)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["labels", "verify", payload])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["valid"] is True and printed["kind"] == "vial" and printed["identifier"] == vial.identifier
    assert printed["check_character"] == mod37_2_check(batch.identifier)
    assert printed["key_id"] == codec.app_keyring().key_id
    altered = payload[:-3] + ("AAA" if payload[-3:] != "AAA" else "BBB")
    result = runner.invoke(args=["labels", "verify", altered])
    assert result.exit_code == 1 and json.loads(result.output)["valid"] is False
    result = runner.invoke(args=["labels", "verify", "garbage"])
    assert result.exit_code == 1 and json.loads(result.output)["kind"] is None


def test_labels_print_writes_the_sheet_and_a_reprint_needs_a_reason(db, lab, app, tmp_path):
    batch = lab.filled(vials=3)
    runner = app.test_cli_runner()
    out = tmp_path / "sheet.pdf"
    result = runner.invoke(args=["labels", "print", "--batch", batch.identifier, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")
    again = runner.invoke(args=["labels", "print", "--batch", batch.identifier, "--out", str(tmp_path / "2.pdf")])
    assert again.exit_code != 0 and "reason" in again.output.lower()
    assert not (tmp_path / "2.pdf").exists()
    ok = runner.invoke(args=["labels", "print", "--batch", batch.identifier, "--out", str(tmp_path / "3.pdf"),
                             "--reason", "Printer jam"])
    assert ok.exit_code == 0, ok.output
    db.session.rollback()
    assert [(p.is_reprint, p.reason) for p in label_prints_of(batch)] == [(False, None), (True, "Printer jam")]


def test_the_label_pdf_embeds_the_cjk_font_for_chinese(db, lab, app, tmp_path):
    from labsys.batches.models import Batch
    from tests.documents.test_pdf_languages import chinese, squeeze

    batch_id = lab.filled(vials=1).id
    # The fixtures' application context already holds the English locale and catalog on g: the
    # sheet is made in a context of its own, as a request of a Chinese-speaking browser is.
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        pdf = vial_label_sheet_pdf(db.session.get(Batch, batch_id))
    path = tmp_path / "zh.pdf"
    path.write_bytes(pdf)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert squeeze(chinese("For clinical trial use only")) in squeeze(text)
    assert "Noto-Sans-CJK-SC" in fonts and " yes " in fonts  # embedded (emb = yes)
    assert "Liberation" not in fonts  # every glyph of the Chinese sheet from the CJK font, as before
