"""Reading field images (TIFF single- or multi-frame, multichannel TIFF, PNG) into 2-D arrays.

Pure: paths or bytes in, numpy arrays out; no web framework.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

DEFAULT_MAX_PIXELS = 100_000_000


class UnreadableImage(ValueError):
    """The file is not an image this analysis can read (corrupt, unsupported or too large)."""


def _source_name(source: str | Path | bytes) -> str:
    return "uploaded bytes" if isinstance(source, (bytes, bytearray)) else str(source)


def _check_pixels(shape: tuple[int, ...], max_pixels: int, name: str) -> None:
    pixels = int(np.prod(shape, dtype=np.int64))
    if pixels > max_pixels:
        raise UnreadableImage(f"{name}: {pixels} pixels exceed the limit of {max_pixels}.")


def _check_array(array: np.ndarray, name: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UnreadableImage(f"{name}: unsupported pixel type {array.dtype}.")
    return array


def read_fields(
    source: str | Path | bytes,
    channel: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[tuple[int | None, np.ndarray]]:
    """The fields of an image file as (frame index, 2-D array) pairs.

    A single-frame TIFF or a PNG gives one pair with frame None; a multi-frame TIFF one pair
    per frame (0, 1, ...). A multichannel image needs `channel` (0-based) to pick the channel;
    RGB PNGs are refused without it. The pixel count is checked against `max_pixels` from the
    file header before decoding. Raises UnreadableImage with a message naming the problem.
    """
    name = _source_name(source)
    raw = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    if raw is None:
        try:
            raw = Path(source).read_bytes()
        except OSError as error:
            raise UnreadableImage(f"{name}: cannot be read ({error.strerror or error}).") from error
    if raw[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _read_tiff(raw, channel, max_pixels, name)
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return _read_png(raw, channel, max_pixels, name)
    raise UnreadableImage(f"{name}: not a TIFF or PNG image.")


def _read_tiff(raw: bytes, channel: int | None, max_pixels: int, name: str) -> list[tuple[int | None, np.ndarray]]:
    try:
        with tifffile.TiffFile(io.BytesIO(raw)) as tiff:
            series = tiff.series[0]
            _check_pixels(series.shape, max_pixels, name)
            axes = series.axes
            data = series.asarray()
    except UnreadableImage:
        raise
    except Exception as error:  # tifffile raises many types for damaged files
        raise UnreadableImage(f"{name}: corrupt or unsupported TIFF ({error}).") from error
    data = _check_array(np.asarray(data), name)
    # Drop length-1 axes except the image plane.
    squeeze = tuple(i for i, axis in enumerate(axes) if data.shape[i] == 1 and axis not in "YX")
    data = np.squeeze(data, axis=squeeze)
    axes = "".join(axis for i, axis in enumerate(axes) if i not in squeeze)
    channel_axes = [i for i, axis in enumerate(axes) if axis in "CS"]
    if channel_axes:
        index = channel_axes[0]
        if channel is None:
            raise UnreadableImage(f"{name}: has {data.shape[index]} channels; choose one with channel.")
        if not 0 <= channel < data.shape[index]:
            raise UnreadableImage(f"{name}: channel {channel} does not exist (it has {data.shape[index]}).")
        data = np.take(data, channel, axis=index)
        axes = axes[:index] + axes[index + 1 :]
    if data.ndim == 2:
        return [(None, data)]
    if data.ndim == 3:
        return [(frame, data[frame]) for frame in range(data.shape[0])]
    raise UnreadableImage(f"{name}: unsupported TIFF layout {axes} {data.shape}.")


def _read_png(raw: bytes, channel: int | None, max_pixels: int, name: str) -> list[tuple[int | None, np.ndarray]]:
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            width, height = picture.size
            _check_pixels((height, width), max_pixels, name)
            picture.load()
            data = np.asarray(picture)
    except UnreadableImage:
        raise
    except Exception as error:
        raise UnreadableImage(f"{name}: corrupt or unsupported PNG ({error}).") from error
    data = _check_array(data, name)
    if data.ndim == 3:
        if channel is None:
            raise UnreadableImage(f"{name}: has {data.shape[2]} channels; choose one with channel.")
        if not 0 <= channel < data.shape[2]:
            raise UnreadableImage(f"{name}: channel {channel} does not exist (it has {data.shape[2]}).")
        data = data[:, :, channel]
    return [(None, data)]
