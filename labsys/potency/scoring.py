"""Scoring one stored field image in a worker process: pure (no Flask, no database), so a
process pool can run it on both cores. A failure becomes a reported outcome, never a crash."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class FieldOutcome:
    """What the scoring of one field produced (numbers and pictures, or why it failed)."""

    image_id: int
    ok: bool
    error: str | None = None
    cell_count: int | None = None
    activated_count: int | None = None
    activation_fraction: float | None = None
    median_area_um2: float | None = None
    algorithm_version: str = ""
    library_versions: dict | None = None
    overlay_png: bytes | None = None
    cells_npz: bytes | None = None


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def score_stored_field(image_id: int, path: str, filename: str, pixel_size_um: float, params: dict,
                       channel: int | None, max_pixels: int) -> FieldOutcome:
    """Decode, score and draw one field; any error is returned as a failed outcome."""
    from labsys.potency.analysis import ALGORITHM_VERSION, outline_overlay, score_field
    from labsys.potency.images import decode
    from labsys.potency.parameters import ParameterSet

    try:
        data = Path(path).read_bytes()
        image, _ = decode(data, filename, max_pixels, channel)
        result = score_field(image, pixel_size_um, ParameterSet.from_dict(params), exclude_border=True)
        overlay = outline_overlay(image, result.labels, result.cells["activated"])
        cells = io.BytesIO()
        np.savez_compressed(cells, **{key: np.asarray(value) for key, value in result.cells.items()})
        median = float(result.median_area_um2)
        return FieldOutcome(
            image_id=image_id, ok=True, cell_count=int(result.cell_count),
            activated_count=int(result.activated_count),
            activation_fraction=float(result.activation_fraction),
            median_area_um2=None if np.isnan(median) else median,
            algorithm_version=result.algorithm_version, library_versions=dict(result.library_versions),
            overlay_png=png_bytes(overlay), cells_npz=cells.getvalue())
    except Exception as error:  # a bad image is reported, not fatal to the run
        return FieldOutcome(image_id=image_id, ok=False, error=f"{type(error).__name__}: {error}"[:500],
                            algorithm_version=ALGORITHM_VERSION)
