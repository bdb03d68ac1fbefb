"""Vector QR codes as inline SVG (no raster: labels stay sharp at any print resolution)."""
from __future__ import annotations

import qrcode
from markupsafe import Markup


def qr_svg(data: str, box_size: int = 10, border: int = 4,
           error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> Markup:
    """An ``<svg>`` element (no XML declaration) for inline use in HTML and WeasyPrint PDFs.

    ``box_size`` is tenths of a millimetre per module (the printed size is set by CSS or by the
    width/height attributes); ``border`` is the quiet zone in modules; 4 is what the QR
    specification asks for.

    The dark modules are drawn as one path with one rectangle per horizontal run, in module units
    (``viewBox`` 0 0 n n). qrcode's own SVG factories draw one sub-path per module: the same
    picture (identical at 600 dpi) with about twice the path commands and decimal coordinates,
    which WeasyPrint parses and draws far more slowly (a 500-vial label sheet is 500 codes)."""
    code = qrcode.QRCode(error_correction=error_correction, box_size=box_size, border=border)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()  # with the quiet zone
    size = len(matrix)
    runs = []
    for y, row in enumerate(matrix):
        x = 0
        while x < size:
            if row[x]:
                start = x
                while x < size and row[x]:
                    x += 1
                runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    millimetres = f"{size * box_size / 10:g}mm"
    return Markup(f'<svg width="{millimetres}" height="{millimetres}" version="1.1" viewBox="0 0 {size} {size}" '
                  f'xmlns="http://www.w3.org/2000/svg"><path d="{"".join(runs)}" fill="#000000"/></svg>')
