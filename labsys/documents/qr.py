"""Vector QR codes as inline SVG (no raster: labels stay sharp at any print resolution)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import qrcode
import qrcode.main
import qrcode.util
from markupsafe import Markup
from numpy.lib.stride_tricks import sliding_window_view


def qr_svg(data: str, box_size: int = 10, border: int = 4,
           error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> Markup:
    """An ``<svg>`` element (no XML declaration) for inline use in HTML and WeasyPrint PDFs.

    ``box_size`` is tenths of a millimetre per module (the printed size is set by CSS or by the
    width/height attributes); ``border`` is the quiet zone in modules; 4 is what the QR
    specification asks for. qrcode encodes; the picture is drawn here (see ``outline_path``)."""
    matrix = qr_matrix(data, error_correction, border)
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


def qr_matrix(data: str, error_correction: int = qrcode.constants.ERROR_CORRECT_M, border: int = 4) -> list[list[bool]]:
    """The modules (True = dark, quiet zone included) that ``qrcode.QRCode.make(fit=True)`` gives.

    qrcode picks the mask by building the whole symbol eight times and scoring each in pure
    Python (about 5 ms a code on an idle core, a third of a 500-vial label sheet's time). The
    eight candidates differ only in the data modules, so they are scored here at once with numpy,
    by the same rules and with the same tie-break (the first lowest); tests compare the result
    with qrcode's own on many payloads."""
    code = qrcode.QRCode(error_correction=error_correction, border=border)
    code.add_data(data)
    code.best_fit()
    code.makeImpl(False, _best_mask_pattern(code))
    return code.get_matrix()


def _best_mask_pattern(code: qrcode.QRCode) -> int:
    code.makeImpl(True, 0)  # what qrcode scores: format and version bits left light ("test")
    symbol = np.array(code.modules, dtype=bool)
    size = len(symbol)
    data = _data_modules(code.version)
    unmasked = symbol ^ (data & _mask(size, 0))
    best, lowest = 0, None
    for pattern in range(8):
        points = _lost_points(unmasked ^ (data & _mask(size, pattern)))
        if lowest is None or points < lowest:
            best, lowest = pattern, points
    return best


@lru_cache(maxsize=None)
def _data_modules(version: int) -> np.ndarray:
    """Where map_data writes: the modules no function pattern or format/version bit sets (the
    same for every code of a version; call after a makeImpl of that version)."""
    probe = qrcode.QRCode(version=version)
    probe.modules_count = version * 4 + 17
    probe.modules = qrcode.main.copy_2d_array(qrcode.main.precomputed_qr_blanks[version])
    probe.setup_type_info(True, 0)
    if version >= 7:
        probe.setup_type_number(True)
    data = np.array([[cell is None for cell in row] for row in probe.modules], dtype=bool)
    data.flags.writeable = False
    return data


@lru_cache(maxsize=None)
def _mask(size: int, pattern: int) -> np.ndarray:
    test = qrcode.util.mask_func(pattern)
    mask = np.array([[bool(test(row, column)) for column in range(size)] for row in range(size)], dtype=bool)
    mask.flags.writeable = False
    return mask


_FINDER_LIKE = (np.array([1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0], dtype=bool),
                np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1], dtype=bool))


def _lost_points(matrix: np.ndarray) -> int:
    """qrcode.util.lost_point, vectorised: runs of five or more, 2×2 blocks, finder-like
    1:1:3:1:1 patterns with four light modules, and the dark share's distance from 50 %."""
    size = len(matrix)
    points = 0
    for lines in (matrix, matrix.T):
        padded = np.full((size, size + 2), 2, dtype=np.int8)  # a sentinel ends every line's last run
        padded[:, 1:-1] = lines
        flat = padded.ravel()
        lengths = np.diff(np.flatnonzero(flat[1:] != flat[:-1]))
        long = lengths[lengths >= 5]
        points += int((long - 2).sum())
        windows = sliding_window_view(lines, 11, axis=1)
        points += 40 * int(sum((windows == pattern).all(axis=2).sum() for pattern in _FINDER_LIKE))
    block = matrix[:-1, :-1]
    points += 3 * int(((block == matrix[1:, :-1]) & (block == matrix[:-1, 1:]) & (block == matrix[1:, 1:])).sum())
    percent = float(int(matrix.sum())) / (size ** 2)
    points += int(abs(percent * 100 - 50) / 5) * 10
    return points
