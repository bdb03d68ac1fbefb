"""Packing of many small objects into one small image, so that a whole-image operation (a
watershed, a distance transform, a thinning) runs over the objects' bounding boxes only.

An object's box keeps at least one empty pixel around it in the mosaic; operations whose result
at a pixel depends only on the object's own pixels and the background around it give the same
result there as on the whole field.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def boxes_of(parts: np.ndarray) -> np.ndarray:
    """Bounding box (row start, row stop, column start, column stop) of every part, row i for
    part i + 1."""
    return np.array(
        [(box[0].start, box[0].stop, box[1].start, box[1].stop) if box else (0, 0, 0, 0)
         for box in ndi.find_objects(parts)],
        dtype=np.int64,
    ).reshape(-1, 4)


def mosaic(
    parts: np.ndarray, chosen: np.ndarray, boxes: np.ndarray, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], tuple[int, int]]:
    """Pack the bounding boxes of the chosen parts (`boxes` from `boxes_of`) tallest first on
    shelves into a small, roughly square mosaic, every box with at least one empty pixel around
    it. Returns the flat field indices of the chosen parts' pixels, their
    (row, column) in the mosaic, and the mosaic's shape. `candidates` (flat indices, ascending)
    limits the pixels returned to those among them (by default every pixel of the parts)."""
    chosen = chosen[np.argsort(boxes[chosen - 1, 0] - boxes[chosen - 1, 1], kind="stable")]
    box = boxes[chosen - 1]
    height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    start = np.cumsum(width + 1) - (width + 1)
    shelf_width = max(int(np.sqrt(np.sum((height + 1) * (width + 1)))), 1)
    _, first, shelf = np.unique(start // shelf_width, return_index=True, return_inverse=True)
    col = 1 + start - start[first][shelf]
    shelf_height = height[first]
    shelf_row = 1 + np.concatenate(([0], np.cumsum(shelf_height + 1)[:-1]))
    row = shelf_row[shelf]
    shift_r = np.zeros(boxes.shape[0] + 1, dtype=np.int64)
    shift_c = np.zeros(boxes.shape[0] + 1, dtype=np.int64)
    shift_r[chosen], shift_c[chosen] = row - box[:, 0], col - box[:, 2]
    selected = np.zeros(boxes.shape[0] + 1, dtype=bool)
    selected[chosen] = True
    if candidates is None:
        pixels = np.flatnonzero(selected[parts])
    else:
        pixels = candidates[selected[parts.ravel()[candidates]]]
    rows, cols = np.divmod(pixels, parts.shape[1])
    owner = parts.ravel()[pixels]
    shape = (int(shelf_row[-1] + shelf_height[-1] + 1), int((col + width).max() + 1))
    return pixels, (rows + shift_r[owner], cols + shift_c[owner]), shape
