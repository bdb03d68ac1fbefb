"""Per-cell measures of a label image, computed for all cells at once.

Every measure works on the cell pixels only (gathered by their flat index in a zero-padded copy
of the label image), so the cost follows the number of cell pixels, not the field size.
"""

from __future__ import annotations

import numpy as np
from skimage import morphology

# Directions of the support function used for the convex hull (solidity).
_HULL_DIRECTIONS = 48

_NEIGHBOURS_4 = ((-1, 0), (1, 0), (0, -1), (0, 1))
_NEIGHBOURS_8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class _Padded:
    """A label image padded by one zero pixel, with the flat indices of its non-zero pixels."""

    def __init__(self, labels: np.ndarray):
        self.shape = labels.shape
        self.padded = np.pad(labels, 1)
        self.flat = self.padded.ravel()
        self.width = self.padded.shape[1]
        self.index = np.flatnonzero(self.flat)
        self.own = self.flat[self.index]

    def offset(self, dr: int, dc: int) -> int:
        return dr * self.width + dc

    def rows_cols(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column in the unpadded image of flat padded indices."""
        rows, cols = np.divmod(index, self.width)
        return rows - 1, cols - 1


def _perimeter_px(labels: np.ndarray, count: int, padded: _Padded | None = None) -> np.ndarray:
    """Per-label perimeter, the same estimator as skimage.measure.perimeter (4-connected border),
    evaluated for all labels at once on the border pixels only."""
    padded = padded or _Padded(labels)
    flat, index, own = padded.flat, padded.index, padded.own
    interior = np.ones(index.size, dtype=bool)
    for dr, dc in _NEIGHBOURS_4:
        interior &= flat[index + padded.offset(dr, dc)] == own
    border_index = index[~interior]
    border_own = own[~interior]
    is_border = np.zeros(flat.size, dtype=bool)
    is_border[border_index] = True
    code = np.full(border_index.size, 1, dtype=np.int32)
    for dr, dc in _NEIGHBOURS_8:
        weight = 2 if dr == 0 or dc == 0 else 10
        neighbour = border_index + padded.offset(dr, dc)
        code += weight * ((flat[neighbour] == border_own) & is_border[neighbour])
    contribution = np.zeros(50, dtype=np.float64)
    contribution[[5, 7, 15, 17, 25, 27]] = 1.0
    contribution[[21, 33]] = np.sqrt(2)
    contribution[[13, 23]] = (1 + np.sqrt(2)) / 2
    return np.bincount(border_own, weights=contribution[code], minlength=count + 1)


def _hull_area_px(
    labels: np.ndarray,
    count: int,
    centroid_r: np.ndarray,
    centroid_c: np.ndarray,
    padded: _Padded | None = None,
) -> np.ndarray:
    """Per-label convex hull area from the support function in many directions (pixel squares,
    so a single pixel has hull area 1). Exact for polygons with edges in those directions and
    within about 0.2 % of the true hull otherwise."""
    padded = padded or _Padded(labels)
    flat, index, own = padded.flat, padded.index, padded.own
    # The support function in any direction is reached at the first or last pixel of a run of
    # the cell along a row (the projection is linear along the row).
    run_end = (flat[index - 1] != own) | (flat[index + 1] != own)
    rows, cols = padded.rows_cols(index[run_end])
    own = own[run_end]
    order = np.argsort(own, kind="stable")
    own, rows, cols = own[order], rows[order], cols[order]
    angles = np.arange(_HULL_DIRECTIONS) * (2 * np.pi / _HULL_DIRECTIONS)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    offset_r = (rows - centroid_r[own]).astype(np.float32)
    offset_c = (cols - centroid_c[own]).astype(np.float32)
    projection = offset_r[:, None] * cos + offset_c[:, None] * sin
    starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
    support = np.maximum.reduceat(projection, starts, axis=0).astype(np.float64)
    support += 0.5 * (np.abs(cos) + np.abs(sin)).astype(np.float64)
    step = 2 * np.pi / _HULL_DIRECTIONS
    neighbours = np.roll(support, 1, axis=1) + np.roll(support, -1, axis=1)
    area = 0.5 * np.sum(support * (neighbours - 2 * support * np.cos(step)), axis=1) / np.sin(step)
    result = np.zeros(count + 1)
    result[own[starts]] = area
    return result


def _skeleton_measures(labels: np.ndarray, count: int, padded: _Padded | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-label skeleton endpoints and total branch length in pixels, from one skeleton of the
    whole field (cells kept apart by a one-pixel gap where they touch)."""
    padded = padded or _Padded(labels)
    flat, index, own = padded.flat, padded.index, padded.own
    foreign = np.zeros(index.size, dtype=bool)
    for dr, dc in _NEIGHBOURS_8:
        neighbour = flat[index + padded.offset(dr, dc)]
        foreign |= (neighbour != own) & (neighbour > 0)
    rows, cols = padded.rows_cols(index[~foreign])
    kept = np.zeros(labels.shape, dtype=bool)
    kept[rows, cols] = True
    skeleton = np.pad(morphology.skeletonize(kept), 1).ravel()
    skeleton_index = np.flatnonzero(skeleton)
    skeleton_own = flat[skeleton_index]

    def on(dr: int, dc: int) -> np.ndarray:
        return skeleton[skeleton_index + padded.offset(dr, dc)]

    neighbours = sum(on(dr, dc).astype(np.int32) for dr, dc in _NEIGHBOURS_8)
    endpoints = np.bincount(skeleton_own[neighbours == 1], minlength=count + 1)

    # Links between skeleton pixels: orthogonal ones count 1, diagonal ones √2 unless an
    # orthogonal path already joins the two pixels (a staircase corner).
    right, down = on(0, 1), on(1, 0)
    down_right = on(1, 1) & ~right & ~down
    down_left = on(1, -1) & ~on(0, -1) & ~down
    length = np.bincount(skeleton_own, weights=right.astype(np.float64) + down, minlength=count + 1)
    length += np.sqrt(2) * np.bincount(
        skeleton_own, weights=down_right.astype(np.float64) + down_left, minlength=count + 1
    )
    return endpoints, length


def measure_cells(labels: np.ndarray, pixel_size_um: float) -> dict[str, np.ndarray]:
    """Per-cell measures for every label 1..N, as a dict of equally long numpy arrays:
    label, area_um2, perimeter_um, circularity (4πA/P², capped at 1), solidity (area over convex
    hull area), aspect_ratio (major over minor axis of the equivalent ellipse), endpoints and
    branch_length_um of the skeleton, centroid_row_px and centroid_col_px."""
    labels = np.asarray(labels).astype(np.int32, copy=False)
    count = int(labels.max()) if labels.size else 0
    padded = _Padded(labels)
    own = padded.own
    rows, cols = padded.rows_cols(padded.index)
    rows, cols = rows.astype(np.float64), cols.astype(np.float64)
    area = np.bincount(own, minlength=count + 1).astype(np.float64)
    safe_area = np.maximum(area, 1)
    mean_r = np.bincount(own, weights=rows, minlength=count + 1) / safe_area
    mean_c = np.bincount(own, weights=cols, minlength=count + 1) / safe_area
    # Central second moments (+1/12 for the extent of a pixel square).
    var_r = np.bincount(own, weights=(rows - mean_r[own]) ** 2, minlength=count + 1) / safe_area + 1 / 12
    var_c = np.bincount(own, weights=(cols - mean_c[own]) ** 2, minlength=count + 1) / safe_area + 1 / 12
    cov = np.bincount(own, weights=(rows - mean_r[own]) * (cols - mean_c[own]), minlength=count + 1) / safe_area
    spread = np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    major = (var_r + var_c) / 2 + spread
    minor = np.maximum((var_r + var_c) / 2 - spread, 1e-12)

    if count:
        perimeter = _perimeter_px(labels, count, padded)
        hull = _hull_area_px(labels, count, mean_r, mean_c, padded)
        endpoints, branch_length = _skeleton_measures(labels, count, padded)
    else:
        perimeter = hull = endpoints = branch_length = np.zeros(1)

    present = slice(1, count + 1)
    area_um2 = area[present] * pixel_size_um**2
    perimeter_um = perimeter[present] * pixel_size_um
    with np.errstate(divide="ignore", invalid="ignore"):
        circularity = np.where(perimeter_um > 0, 4 * np.pi * area_um2 / perimeter_um**2, 1.0)
        solidity = np.where(hull[present] > 0, area[present] / hull[present], 1.0)
    return {
        "label": np.arange(1, count + 1, dtype=np.int32),
        "area_um2": area_um2,
        "perimeter_um": perimeter_um,
        "circularity": np.minimum(circularity, 1.0),
        "solidity": np.minimum(solidity, 1.0),
        "aspect_ratio": np.sqrt(major[present] / minor[present]),
        "endpoints": endpoints[present].astype(np.int32),
        "branch_length_um": branch_length[present] * pixel_size_um,
        "centroid_row_px": mean_r[present],
        "centroid_col_px": mean_c[present],
    }
