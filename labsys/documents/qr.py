"""QR codes for PDFs and pages: a raster image of one pixel per module for WeasyPrint (``qr_img``),
or vector SVG (``qr_svg``).

The PDFs use ``qr_img``: a PNG data URI drawn with ``image-rendering: pixelated``, which WeasyPrint
writes as a PDF image with /Interpolate false, so viewers and printers scale it by replicating
pixels: every module stays a sharp square at any print resolution, as with the vector code. It
costs WeasyPrint one small image instead of a path of hundreds of points to parse and draw (a
500-vial label sheet drew 500 such paths: half its time)."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import qrcode
import qrcode.base
import qrcode.exceptions
import qrcode.LUT
import qrcode.util
from markupsafe import Markup, escape
from PIL import Image


def qr_img(data: str, css_class: str = "qr", border: int = 4,
           error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> Markup:
    """An ``<img class="qr">`` whose source is ``qr_png(data)`` as a data URI; its printed size is
    set by the document's CSS (``labsys.documents.pdf.BASE_CSS`` turns interpolation off)."""
    return qr_imgs([data], css_class, border, error_correction)[0]


def qr_imgs(datas: Sequence[str], css_class: str = "qr", border: int = 4,
            error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> list[Markup]:
    """``qr_img`` of each of ``datas``, the symbols made together (``qr_modules_many``)."""
    return [Markup(f'<img class="{escape(css_class)}" src="data:image/png;base64,'
                   f'{base64.b64encode(_png(modules)).decode("ascii")}" alt="QR">')
            for modules in qr_modules_many(datas, error_correction, border)]


def qr_png(data: str, border: int = 4, error_correction: int = qrcode.constants.ERROR_CORRECT_M) -> bytes:
    """The symbol as a PNG of one pixel per module (8-bit grey, black and white only: WeasyPrint
    embeds grey PNG data as it is, where a 1-bit image would be converted to RGB first)."""
    return _png(qr_modules(data, error_correction, border))


def _png(modules: np.ndarray) -> bytes:
    image = Image.fromarray(np.where(modules, 0, 255).astype(np.uint8), "L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
    """The modules (True = dark, quiet zone included) that ``qrcode.QRCode.make(fit=True)`` gives."""
    return qr_modules(data, error_correction, border).tolist()


def qr_modules(data: str, error_correction: int = qrcode.constants.ERROR_CORRECT_M, border: int = 4) -> np.ndarray:
    """``qr_matrix`` as a numpy bool array: the same symbol, made cheaply (``qr_modules_many``)."""
    return qr_modules_many([data], error_correction, border)[0]


# Codes scored for their mask at once: eight candidates each, so 64 codes are 512 symbols (a few MB
# of work arrays for a label's 49 × 49 modules, some tens of MB at version 40's 177 × 177).
_BATCH = 64


def qr_modules_many(datas: Sequence[str], error_correction: int = qrcode.constants.ERROR_CORRECT_M,
                    border: int = 4) -> list[np.ndarray]:
    """The symbol of each of ``datas`` (``qr_modules`` of each, in order), made together.

    qrcode segments the data (``QRCode.add_data``). What qrcode then does in pure Python, a bit
    at a time (about 5 ms a code), is done here with whole integers, per-version tables and numpy,
    by the same rules and with qrcode's own tables: the version is the smallest that fits (it
    depends only on each segment's mode and length, so it is worked out once per shape); the
    codewords are ``util.create_data``'s (see ``_data_stream`` and ``_codewords``); the bits go
    where ``map_data`` puts them (its zigzag order, cached per version); the mask is the first
    of the eight with the fewest penalty points, scored as qrcode scores them (format and version
    bits left light); then the format and version information of that mask. Codes of one
    version share their tables, so their Reed-Solomon remainders and their mask scores are
    computed together, as arrays of codes (a label sheet is hundreds of codes of one version: a
    few numpy operations per codeword instead of a few Python ones per code and codeword). Tests
    compare the result with qrcode's own on many payloads and levels, and a batch with its codes
    made one at a time."""
    streams: dict[int, list[tuple[int, list[int]]]] = {}
    for index, data in enumerate(datas):
        code = qrcode.QRCode(error_correction=error_correction, border=border)
        code.add_data(data)
        version = _version_for(tuple((chunk.mode, len(chunk)) for chunk in code.data_list), error_correction)
        streams.setdefault(version, []).append((index, _data_stream(version, error_correction, code.data_list)))
    symbols: list[np.ndarray | None] = [None] * len(datas)
    for version, entries in streams.items():
        for first in range(0, len(entries), _BATCH):
            chunk = entries[first:first + _BATCH]
            made = _symbols(version, error_correction, np.array([stream for _, stream in chunk], dtype=np.uint8))
            for (index, _), symbol in zip(chunk, made):
                symbols[index] = np.pad(symbol, border, constant_values=False) if border else symbol
    return symbols  # type: ignore[return-value]


def _symbols(version: int, error_correction: int, streams: np.ndarray) -> np.ndarray:
    """(n, size, size): the masked symbols, format and version bits set, of ``n`` data streams."""
    words = _codewords(version, error_correction, streams)
    rows, columns = _data_order(version)
    bits = np.unpackbits(words, axis=1)[:, : len(rows)].astype(bool)
    count = len(streams)
    unmasked = np.repeat(_blank(version)[None], count, axis=0)
    unmasked[:, rows[: bits.shape[1]], columns[: bits.shape[1]]] = bits  # modules past the codewords stay light
    candidates = unmasked[:, None] ^ _masked_data_modules(version)[None]  # (n, 8, size, size): the eight masks
    size = candidates.shape[-1]
    points = _lost_points(candidates.reshape(count * 8, size, size)).reshape(count, 8)
    best = np.argmin(points, axis=1)  # the first of the lowest, as qrcode
    symbols = candidates[np.arange(count), best]
    for symbol, pattern in zip(symbols, best.tolist()):
        positions, values = _type_bits(version, error_correction, pattern)
        symbol[positions] = values
    return symbols


def _data_stream(version: int, error_correction: int, data_list: list) -> list[int]:
    """The data codewords ``qrcode.util.create_data`` makes (mode, length and data fields, the
    terminator, padding to a byte, pad bytes to the capacity), built as one whole integer
    instead of a bit at a time; qrcode's own tables (modes, length fields, RS blocks) are used."""
    util = qrcode.util
    value = length = 0
    for chunk in data_list:
        fields = [(chunk.mode, 4), (len(chunk), util.length_in_bits(chunk.mode, version))]
        data = chunk.data
        if chunk.mode == util.MODE_NUMBER:
            fields += [(int(data[i:i + 3]), util.NUMBER_LENGTH[len(data[i:i + 3])]) for i in range(0, len(data), 3)]
        elif chunk.mode == util.MODE_ALPHA_NUM:
            find = util.ALPHA_NUM.find
            fields += [(find(data[i]) * 45 + find(data[i + 1]), 11) if i + 1 < len(data) else (find(data[i:i + 1]), 6)
                       for i in range(0, len(data), 2)]
        else:
            fields += [(byte, 8) for byte in data]
        for number, bits in fields:
            value = (value << bits) | (number & ((1 << bits) - 1))
            length += bits
    limit = sum(block.data_count * 8 for block in qrcode.base.rs_blocks(version, error_correction))
    if length > limit:
        raise qrcode.exceptions.DataOverflowError(f"Code length overflow. Data size ({length}) > size available ({limit})")
    terminator = min(limit - length, 4)
    value, length = value << terminator, length + terminator
    if length % 8:
        value, length = value << (8 - length % 8), length + 8 - length % 8
    stream = list(value.to_bytes(length // 8, "big")) if length else []
    stream += [util.PAD0 if i % 2 == 0 else util.PAD1 for i in range((limit - length) // 8)]
    return stream


def _codewords(version: int, error_correction: int, streams: np.ndarray) -> np.ndarray:
    """(n, codewords): what ``qrcode.util.create_data`` returns for each of the ``n`` data streams
    of this version and level (the data and Reed-Solomon codewords of its blocks, interleaved).
    The remainders come from a multiplication table (for many streams, as arrays of all of them
    at once) instead of a bit at a time with qrcode's recursive polynomial objects; its generator
    polynomials and GF(256) are used as they are."""
    blocks = qrcode.base.rs_blocks(version, error_correction)
    table = _gf_product_array()
    data_blocks, ec_blocks, offset = [], [], 0
    for block in blocks:
        data = streams[:, offset: offset + block.data_count]
        offset += block.data_count
        data_blocks.append(data)
        ec_count = block.total_count - block.data_count
        if len(streams) < _ARRAY_REMAINDERS:  # a code or a few: Python integers cost less than numpy calls
            ec_blocks.append(np.array([_remainder(row, ec_count) for row in data.tolist()],
                                      dtype=np.uint8).reshape(len(streams), ec_count))
            continue
        generator = np.array(_generator(ec_count), dtype=np.intp)[None, :]
        # data·x^ec divided by the generator, long division over GF(256): at each data codeword the
        # leading coefficient times the generator is taken off the next ec coefficients.
        work = np.zeros((len(streams), block.total_count), dtype=np.uint8)
        work[:, : block.data_count] = data
        for i in range(block.data_count):
            work[:, i + 1: i + 1 + ec_count] ^= table[work[:, i: i + 1], generator]  # a zero adds nothing
        ec_blocks.append(work[:, block.data_count:])
    order = _interleaving(tuple((b.data_count, b.total_count - b.data_count) for b in blocks))
    return np.concatenate(data_blocks + ec_blocks, axis=1)[:, order]


# From this many codes of a version, their remainders are computed as arrays (one numpy step per
# data codeword for all of them); below it, code by code with Python integers.
_ARRAY_REMAINDERS = 8


def _remainder(data: list[int], count: int) -> list[int]:
    """The ``count`` Reed-Solomon codewords of ``data`` (the remainder of data·x^count divided by
    the generator polynomial over GF(256)), by the usual shift register."""
    generator = _generator(count)
    table = _gf_products()
    remainder = [0] * count
    for byte in data:
        factor = byte ^ remainder[0]
        remainder = remainder[1:] + [0]
        if factor:
            row = table[factor]
            remainder = [r ^ row[g] for r, g in zip(remainder, generator)]
    return remainder


@lru_cache(maxsize=None)
def _interleaving(blocks: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Column order taking the blocks' data codewords, then their EC codewords, laid side by side,
    to create_data's interleaved order (the i-th codeword of every block that has one, in turn)."""
    starts, at = [], 0
    for data_count, _ in blocks:
        starts.append(at)
        at += data_count
    ec_starts = []
    for _, ec_count in blocks:
        ec_starts.append(at)
        at += ec_count
    order = [starts[b] + i for i in range(max(d for d, _ in blocks)) for b, (d, _) in enumerate(blocks) if i < d]
    order += [ec_starts[b] + i for i in range(max(e for _, e in blocks)) for b, (_, e) in enumerate(blocks) if i < e]
    result = np.array(order, dtype=np.intp)
    result.flags.writeable = False
    return result


@lru_cache(maxsize=None)
def _generator(count: int) -> tuple[int, ...]:
    """Coefficients after the leading 1 of the generator polynomial of ``count`` EC codewords."""
    if count in qrcode.LUT.rsPoly_LUT:
        coefficients = list(qrcode.LUT.rsPoly_LUT[count])
    else:
        polynomial = qrcode.base.Polynomial([1], 0)
        for i in range(count):
            polynomial = polynomial * qrcode.base.Polynomial([1, qrcode.base.gexp(i)], 0)
        coefficients = list(polynomial)
    return tuple(coefficients[1:])


@lru_cache(maxsize=None)
def _gf_products() -> tuple[tuple[int, ...], ...]:
    """a·b in qrcode's GF(256) for every a, b (a 256 × 256 table)."""
    base = qrcode.base
    return tuple(tuple(0 if a == 0 or b == 0 else base.gexp(base.glog(a) + base.glog(b)) for b in range(256))
                 for a in range(256))


@lru_cache(maxsize=None)
def _gf_product_array() -> np.ndarray:
    """``_gf_products`` as a (256, 256) uint8 array."""
    table = np.array(_gf_products(), dtype=np.uint8)
    table.flags.writeable = False
    return table


@lru_cache(maxsize=None)
def _version_for(shape: tuple[tuple[int, int], ...], error_correction: int) -> int:
    """The version ``QRCode.best_fit`` picks for segments of these (mode, length) pairs."""
    samples = {qrcode.util.MODE_NUMBER: "0", qrcode.util.MODE_ALPHA_NUM: "A", qrcode.util.MODE_8BIT_BYTE: "a"}
    probe = qrcode.QRCode(error_correction=error_correction)
    probe.data_list = [qrcode.util.QRData(samples[mode] * length, mode=mode, check_data=True) for mode, length in shape]
    return probe.best_fit()


def _function_patterns(version: int) -> list[list[bool | None]]:
    """qrcode's modules after its function patterns (None where nothing is set yet)."""
    size = version * 4 + 17
    probe = qrcode.QRCode(version=version)
    probe.modules_count = size
    probe.modules = [[None] * size for _ in range(size)]
    probe.setup_position_probe_pattern(0, 0)
    probe.setup_position_probe_pattern(size - 7, 0)
    probe.setup_position_probe_pattern(0, size - 7)
    probe.setup_position_adjust_pattern()
    probe.setup_timing_pattern()
    return probe.modules


@lru_cache(maxsize=None)
def _blank(version: int) -> np.ndarray:
    """The function patterns of ``version`` (dark = True), every other module light."""
    blank = np.array([[bool(cell) for cell in row] for row in _function_patterns(version)], dtype=bool)
    blank.flags.writeable = False
    return blank


@lru_cache(maxsize=None)
def _data_modules(version: int) -> np.ndarray:
    """Where map_data writes: the modules no function pattern or format/version bit sets (the
    same for every code of a version)."""
    probe = qrcode.QRCode(version=version)
    probe.modules_count = version * 4 + 17
    probe.modules = _function_patterns(version)
    probe.setup_type_info(True, 0)
    if version >= 7:
        probe.setup_type_number(True)
    data = np.array([[cell is None for cell in row] for row in probe.modules], dtype=bool)
    data.flags.writeable = False
    return data


@lru_cache(maxsize=None)
def _data_order(version: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the data modules in the order ``map_data`` fills them (upwards and
    downwards in two-column strips from the right, skipping the vertical timing pattern)."""
    free = _data_modules(version)
    size = len(free)
    rows: list[int] = []
    columns: list[int] = []
    row, step = size - 1, -1
    for column in range(size - 1, 0, -2):
        if column <= 6:
            column -= 1
        while True:
            for c in (column, column - 1):
                if free[row, c]:
                    rows.append(row)
                    columns.append(c)
            row += step
            if row < 0 or row >= size:
                row -= step
                step = -step
                break
    order = (np.array(rows, dtype=np.intp), np.array(columns, dtype=np.intp))
    for array in order:
        array.flags.writeable = False
    return order


@lru_cache(maxsize=None)
def _type_bits(version: int, error_correction: int, pattern: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Positions and values of the format information (and of the version information from
    version 7), the dark module included, that qrcode writes for this level and mask."""
    size = version * 4 + 17
    probe = qrcode.QRCode(version=version, error_correction=error_correction)
    probe.modules_count = size
    probe.modules = [[None] * size for _ in range(size)]
    probe.setup_type_info(False, pattern)
    if version >= 7:
        probe.setup_type_number(False)
    cells = [(r, c, bool(value)) for r, line in enumerate(probe.modules) for c, value in enumerate(line)
             if value is not None]
    positions = (np.array([r for r, _, _ in cells], dtype=np.intp), np.array([c for _, c, _ in cells], dtype=np.intp))
    values = np.array([v for _, _, v in cells], dtype=bool)
    return positions, values


@lru_cache(maxsize=None)
def _mask(size: int, pattern: int) -> np.ndarray:
    test = qrcode.util.mask_func(pattern)
    mask = np.array([[bool(test(row, column)) for column in range(size)] for row in range(size)], dtype=bool)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=None)
def _masked_data_modules(version: int) -> np.ndarray:
    """(8, size, size): the data modules each mask pattern darkens."""
    data = _data_modules(version)
    stack = np.stack([data & _mask(len(data), pattern) for pattern in range(8)])
    stack.flags.writeable = False
    return stack


# 1:1:3:1:1 finder-like patterns with four light modules on either side, as 11-bit numbers (first
# module the most significant bit): 10111010000 and 00001011101.
_FINDER_LIKE = (0b10111010000, 0b00001011101)


def _lost_points(symbols: np.ndarray) -> np.ndarray:
    """qrcode.util.lost_point of each symbol of a (k, size, size) stack, vectorised: runs of five
    or more (3 + the excess), 2×2 blocks of one colour (3 each), finder-like patterns (40 each),
    and 10 per whole 5 % of the dark share's distance from 50 %."""
    count, size = len(symbols), symbols.shape[1]
    points = np.zeros(count, dtype=np.int64)
    for lines in (symbols, symbols.transpose(0, 2, 1)):
        # A run of L ≥ 5 holds L − 4 windows of five modules of one colour and begins once: its
        # 3 + (L − 5) points are the windows it holds plus two for its start.
        same = lines[:, :, 1:] == lines[:, :, :-1]  # each module against the next
        uniform = same[:, :, :-3] & same[:, :, 1:-2] & same[:, :, 2:-1] & same[:, :, 3:]
        starts = uniform.copy()
        starts[:, :, 1:] &= ~same[:, :, :-4]  # the window's first module differs from the one before
        points += uniform.sum(axis=(1, 2)) + 2 * starts.sum(axis=(1, 2))
        windows = np.zeros((count, size, size - 10), dtype=np.uint16)
        for k in range(11):
            windows = (windows << 1) | lines[:, :, k:k + size - 10]
        points += 40 * ((windows == _FINDER_LIKE[0]) | (windows == _FINDER_LIKE[1])).sum(axis=(1, 2))
    block = symbols[:, :-1, :-1]
    points += 3 * ((block == symbols[:, 1:, :-1]) & (block == symbols[:, :-1, 1:])
                   & (block == symbols[:, 1:, 1:])).sum(axis=(1, 2))
    percent = symbols.sum(axis=(1, 2)).astype(np.float64) / (size ** 2)  # as qrcode: in floats, truncated
    points += (np.abs(percent * 100 - 50) / 5).astype(np.int64) * 10
    return points
