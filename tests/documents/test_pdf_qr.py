"""Vector QR codes and PDF rendering with an embedded CJK font."""
import subprocess

import numpy as np
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


def _payloads():
    import random

    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    signed = [f"LS1.VIAL.W{n:013d}{n % 1000:03d}.ABCDEF12." + "".join(rng.choice(alphabet) for _ in range(103))
              for n in range(60)]
    return signed + ["HELLO-LABSYS", "x", "a" * 300, "b" * 1000, "批记录 ✓"]


def test_the_qr_modules_are_exactly_those_qrcode_itself_chooses_mask_and_all():
    import qrcode

    from labsys.documents.qr import qr_matrix

    versions = set()
    for payload in _payloads():
        for level in (qrcode.constants.ERROR_CORRECT_L, qrcode.constants.ERROR_CORRECT_M,
                      qrcode.constants.ERROR_CORRECT_H):
            reference = qrcode.QRCode(error_correction=level, border=4)
            reference.add_data(payload)
            reference.make(fit=True)
            versions.add(reference.version)
            assert qr_matrix(payload, level, 4) == reference.get_matrix(), (payload, level)
    assert min(versions) <= 2 and max(versions) >= 7  # with and without version information


def test_codes_made_together_are_the_codes_made_one_at_a_time():
    """qr_modules_many groups codes by version and computes their Reed-Solomon remainders and
    mask scores as arrays: a batch of mixed versions (and more codes of one version than are
    scored at once) gives each code exactly its own symbol, in order."""
    import qrcode

    from labsys.documents.qr import _BATCH, qr_imgs, qr_modules, qr_modules_many, qr_png

    payloads = _payloads()
    signed = payloads[:60]
    batch = signed * (_BATCH // len(signed) + 2) + payloads[60:] + signed[:3]
    assert len(batch) > 2 * _BATCH
    for level in (qrcode.constants.ERROR_CORRECT_L, qrcode.constants.ERROR_CORRECT_M,
                  qrcode.constants.ERROR_CORRECT_H):
        together = qr_modules_many(batch, level, 4)
        assert len(together) == len(batch)
        for payload, modules in zip(batch, together):
            assert np.array_equal(modules, qr_modules(payload, level, 4)), (payload, level)
    assert qr_modules_many([]) == []
    images = qr_imgs(signed[:2], "qr label-qr")
    assert all(str(img).startswith('<img class="qr label-qr" src="data:image/png;base64,') for img in images)
    assert str(images[1]).split('"')[3].split(",", 1)[1] == __import__("base64").b64encode(qr_png(signed[1])).decode()


def _filled_modules(path: str, size: int) -> list[list[bool]]:
    """Rasterise an outline path (M/h/v/z in whole modules) by the nonzero winding rule at each
    module's centre."""
    import re

    winding = [[0] * size for _ in range(size)]

    def vertical(x, y0, y1):
        for y in range(min(y0, y1), max(y0, y1)):
            for column in range(x, size):
                winding[y][column] += 1 if y1 > y0 else -1

    x = y = start_x = start_y = 0
    for command, number in re.findall(r"([Mhvz])([-\d ]*)", path):
        if command == "M":
            x, y = map(int, number.split())
            start_x, start_y = x, y
        elif command == "h":
            x += int(number)
        elif command == "v":
            vertical(x, y, y + int(number))
            y += int(number)
        else:
            if x == start_x:
                vertical(x, y, start_y)
            x, y = start_x, start_y
    return [[cell != 0 for cell in row] for row in winding]


def test_the_qr_outline_path_fills_exactly_the_dark_modules():
    import re

    from labsys.documents.qr import outline_path, qr_matrix

    for payload in _payloads()[:20] + ["HELLO-LABSYS"]:
        matrix = qr_matrix(payload)
        path = outline_path(matrix)
        assert _filled_modules(path, len(matrix)) == [[bool(cell) for cell in row] for row in matrix]
        squares = sum(map(sum, matrix))
        assert len(re.findall("[hv]", path)) < 2 * squares  # far fewer commands than a square per module
    svg = str(qr_svg("HELLO-LABSYS", box_size=4))
    assert svg.startswith('<svg width="11.6mm" height="11.6mm"') and 'viewBox="0 0 29 29"' in svg


def test_raster_qr_images_are_drawn_without_interpolation_and_scan_at_screen_and_print_resolutions(app, tmp_path):
    """The PDFs draw QR codes as images of one pixel per module (qr_img): PDF /Interpolate false,
    so every module prints as a sharp square; a decoder reads the code at 150 and at 600 dpi."""
    import re

    import numpy as np

    from labsys.documents.qr import qr_img, qr_modules, qr_png

    payload = "LS1.VIAL.W000026000005001.ABCDEF12." + "A" * 103
    png = Image.open(__import__("io").BytesIO(qr_png(payload)))
    assert png.mode == "L" and png.size == (len(qr_modules(payload)),) * 2
    assert np.array_equal(np.array(png) == 0, qr_modules(payload))  # one pixel per module, dark = black
    img = str(qr_img(payload, "qr label-qr"))
    assert img.startswith('<img class="qr label-qr" src="data:image/png;base64,')
    html = f"<style>img.label-qr {{ width: 27mm; height: 27mm; }}</style><p>批记录</p>{img}"
    with app.test_request_context():
        pdf = html_to_pdf(html)
    assert re.search(rb"/Interpolate\s+false", pdf) and not re.search(rb"/Interpolate\s+true", pdf)
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    for dpi in (150, 600):
        subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(path), str(tmp_path / f"r{dpi}")], check=True)
        page = Image.open(next(tmp_path.glob(f"r{dpi}*.png")))
        assert [r.text for r in zxingcpp.read_barcodes(page)] == [payload], dpi
