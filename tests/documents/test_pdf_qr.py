"""Vector QR codes and PDF rendering with an embedded CJK font."""
import subprocess

import zxingcpp
from PIL import Image

from labsys.documents.pdf import html_to_pdf
from labsys.documents.qr import qr_svg


def test_qr_codes_are_inline_vector_svg():
    svg = str(qr_svg("LS1.VIAL.TEST"))
    assert svg.startswith("<svg") and "<path" in svg and "<?xml" not in svg and "<image" not in svg


def test_a_pdf_with_chinese_text_embeds_the_cjk_font_and_its_qr_scans(app, tmp_path):
    html = f"<p>批记录 Batch record</p>{qr_svg('HELLO-LABSYS')}"
    with app.test_request_context():
        pdf = html_to_pdf(html)
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    assert "CJK" in fonts and "yes" in fonts  # embedded
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "批记录" in text
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(path), str(tmp_path / "p")], check=True)
    decoded = [r.text for r in zxingcpp.read_barcodes(Image.open(next(tmp_path.glob("p*.png"))))]
    assert decoded == ["HELLO-LABSYS"]
