"""Vector QR codes as inline SVG (no raster: labels stay sharp at any print resolution)."""
from __future__ import annotations

import qrcode
from markupsafe import Markup


def qr_svg(data: str, box_size: int = 10, border: int = 4,
           error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> Markup:
    """An ``<svg>`` element (no XML declaration) for inline use in HTML and WeasyPrint PDFs.

    ``box_size`` is tenths of a millimetre per module (the printed size is set by CSS or by the
    width/height attributes); ``border`` is the quiet zone in modules; 4 is what the QR
    specification asks for. qrcode encodes; the picture is drawn here (see ``outline_path``)."""
    code = qrcode.QRCode(error_correction=error_correction, box_size=box_size, border=border)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()  # with the quiet zone
    size = len(matrix)
    millimetres = f"{size * box_size / 10:g}mm"
    return Markup(f'<svg width="{millimetres}" height="{millimetres}" version="1.1" viewBox="0 0 {size} {size}" '
                  f'xmlns="http://www.w3.org/2000/svg"><path d="{outline_path(matrix)}" fill="#000000"/></svg>')


def outline_path(matrix: list[list[bool]]) -> str:
    """SVG path data (module units) filling exactly the dark modules of ``matrix``: the outlines
    of the dark regions, every boundary edge oriented with the dark side on its right, so the
    default nonzero fill rule leaves the light holes empty. qrcode's SVG factories draw one
    square per module: the same picture (identical at 600 dpi) with about three times as many
    path commands, which WeasyPrint parses one by one (a 500-vial label sheet is 500 codes)."""
    size = len(matrix)

    def dark(x: int, y: int) -> bool:
        return 0 <= x < size and 0 <= y < size and bool(matrix[y][x])

    following: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y in range(size):
        for x in range(size):
            if not matrix[y][x]:
                continue
            if not dark(x, y - 1):
                following.setdefault((x, y), []).append((x + 1, y))
            if not dark(x + 1, y):
                following.setdefault((x + 1, y), []).append((x + 1, y + 1))
            if not dark(x, y + 1):
                following.setdefault((x + 1, y + 1), []).append((x, y + 1))
            if not dark(x - 1, y):
                following.setdefault((x, y + 1), []).append((x, y))
    parts = []
    while following:
        start = next(iter(following))
        loop = [start]
        point = start
        while True:  # in-degree equals out-degree at every corner, so the walk ends where it began
            exits = following[point]
            step = exits.pop()
            if not exits:
                del following[point]
            if step == start:
                break
            loop.append(step)
            point = step
        corners = [p for i, p in enumerate(loop)
                   if not (loop[i - 1][0] == p[0] == loop[(i + 1) % len(loop)][0]
                           or loop[i - 1][1] == p[1] == loop[(i + 1) % len(loop)][1])]
        commands = [f"M{corners[0][0]} {corners[0][1]}"]
        for a, b in zip(corners, corners[1:]):
            commands.append(f"h{b[0] - a[0]}" if a[1] == b[1] else f"v{b[1] - a[1]}")
        parts.append("".join(commands) + "z")
    return "".join(parts)
