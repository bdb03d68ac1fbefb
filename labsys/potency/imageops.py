"""Image operations behind the potency segmentation, written for speed on large, sparse fields
(numpy, scipy and scikit-image only). Each gives the same result as the plain library operation
named in its docstring, or is described exactly where it differs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi
from skimage import segmentation

from labsys.potency.mosaic import mosaic as _mosaic


_BACKGROUND_BLOCKS = 12


def _median_filter(image: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """scipy.ndimage.median_filter(image, size, mode="reflect")[::stride, ::stride] for an odd
    size, by partitioning all windows at once (several times faster for these window sizes)."""
    half = size // 2
    windows = sliding_window_view(np.pad(image, half, mode="symmetric"), (size, size))[::stride, ::stride]
    windows = windows.reshape(windows.shape[0], windows.shape[1], size * size)  # a copy
    middle = (size * size) // 2
    windows.partition(middle, axis=2)
    return windows[:, :, middle].astype(np.float32)


def _interpolation(size: int, blocks: int, first: float, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from `blocks` sample points (the first at pixel `first`, then every
    `spacing` pixels) to `size` pixels: lower and upper sample index and the upper sample's
    weight per pixel; constant beyond the first and last sample."""
    position = np.clip((np.arange(size) - first) / spacing, 0, blocks - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, blocks - 1)
    return low, high, (position - low).astype(np.float32)


def _background(image: np.ndarray, window_px: float) -> np.ndarray:
    """Uneven illumination: a median over about `window_px` of the means of small blocks (a
    twelfth of the window wide), interpolated back to full size bilinearly."""
    step = max(1, int(window_px // _BACKGROUND_BLOCKS))
    size = max(3, int(round(window_px / step)) | 1)
    small = _median_filter(_block_mean(image, step), size)
    spacing = step
    first = (step - 1) / 2
    low, high, weight = _interpolation(image.shape[0], small.shape[0], first, spacing)
    rows = small[low] * (1 - weight)[:, None] + small[high] * weight[:, None]
    low, high, weight = _interpolation(image.shape[1], small.shape[1], first, spacing)
    return rows[:, low] * (1 - weight) + rows[:, high] * weight


def _touching_edge(labels: np.ndarray) -> np.ndarray:
    """Boolean per label id: does the object touch the field edge."""
    touching = np.zeros(int(labels.max()) + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touching[edge] = True
    touching[0] = False
    return touching


def _merge_regions(
    regions: np.ndarray,
    seed_image: np.ndarray,
    mask: np.ndarray,
    prominence: float,
    min_area_px: float,
    pixels: np.ndarray | None = None,
) -> np.ndarray:
    """Merge watershed regions grown from every local maximum, h-maxima style: a region whose peak
    rises less than `prominence` above its highest saddle to a brighter neighbour joins that
    neighbour, and a region with fewer than `min_area_px` mask pixels joins the neighbour it
    shares its highest saddle with. Vectorised over the region adjacency edges; repeated until
    nothing changes (a few rounds). `pixels` (flat indices) limits the work to the pixels of the
    regions that may merge, and those pixels are then relabelled in place in `regions`; by
    default every pixel is looked at and a new label image returned."""
    count = int(regions.max())
    if count < 2:
        return regions
    rows_n, cols_n = regions.shape
    flat_regions, flat_seed, flat_mask = regions.ravel(), seed_image.ravel(), mask.ravel()
    restricted = pixels is not None
    if pixels is None:
        pixels = np.flatnonzero(flat_regions)
    own = flat_regions[pixels]
    pairs_a, pairs_b, pairs_saddle = [], [], []
    for step, valid in ((1, pixels % cols_n < cols_n - 1), (cols_n, pixels < (rows_n - 1) * cols_n)):
        here = pixels[valid]
        there = flat_regions[here + step]
        boundary = (there != own[valid]) & (there > 0)
        pairs_a.append(own[valid][boundary])
        pairs_b.append(there[boundary])
        pairs_saddle.append(np.minimum(flat_seed[here[boundary]], flat_seed[here[boundary] + step]))
    edge_a = np.concatenate(pairs_a).astype(np.int64)
    edge_b = np.concatenate(pairs_b).astype(np.int64)
    edge_saddle = np.concatenate(pairs_saddle).astype(np.float64)
    if edge_a.size == 0:
        return regions
    peak = np.zeros(count + 1)
    np.maximum.at(peak, own, flat_seed[pixels].astype(np.float64))
    area = np.bincount(own, weights=flat_mask[pixels], minlength=count + 1)
    parent = np.arange(count + 1)
    for _round in range(200):
        low = np.minimum(edge_a, edge_b)
        high = np.maximum(edge_a, edge_b)
        keep = low != high
        low, high, saddle = low[keep], high[keep], edge_saddle[keep]
        if low.size == 0:
            break
        # One saddle per adjacent pair: the highest.
        key = low * (count + 1) + high
        order = np.lexsort((-saddle, key))
        first = np.r_[True, key[order][1:] != key[order][:-1]]
        low, high, saddle = low[order][first], high[order][first], saddle[order][first]
        # Each edge seen from both ends: region `r` may join neighbour `q`.
        r = np.r_[low, high]
        q = np.r_[high, low]
        s = np.r_[saddle, saddle]
        # Prominence merges go to a brighter neighbour, area merges to a larger one; one kind
        # per round, so every round's merges follow one strict order and cannot form cycles.
        joins_brighter = (peak[q] > peak[r]) | ((peak[q] == peak[r]) & (q < r))
        wants = joins_brighter & (peak[r] - s < prominence)
        if not wants.any():
            joins_larger = (area[q] > area[r]) | ((area[q] == area[r]) & (q < r))
            wants = joins_larger & (area[r] < min_area_px)
        if not wants.any():
            break
        r, q, s = r[wants], q[wants], s[wants]
        order = np.lexsort((-s, r))
        chosen = np.r_[True, r[order][1:] != r[order][:-1]]
        r, q = r[order][chosen], q[order][chosen]
        step_parent = np.arange(count + 1)
        step_parent[r] = q
        while True:
            grand = step_parent[step_parent]
            if np.array_equal(grand, step_parent):
                break
            step_parent = grand
        parent = step_parent[parent]
        edge_a, edge_b = step_parent[edge_a], step_parent[edge_b]
        merged_peak = np.zeros(count + 1)
        np.maximum.at(merged_peak, step_parent, peak)
        peak = merged_peak
        area = np.bincount(step_parent, weights=area, minlength=count + 1)
    if restricted:
        # Only the given pixels' regions can have merged: relabel them in place.
        flat_regions[pixels] = parent[own]
        return regions
    return parent[regions].astype(regions.dtype, copy=False)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """float32 means of factor × factor blocks (edge pixels repeated to fill the last blocks)."""
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    pad_r, pad_c = (-rows) % factor, (-cols) % factor
    if pad_r or pad_c:
        image = np.pad(image, ((0, pad_r), (0, pad_c)), mode="edge")
    blocks = image.reshape(image.shape[0] // factor, factor, image.shape[1] // factor, factor)
    total = blocks[:, 0, :, 0].astype(np.float32)
    for i in range(factor):
        for j in range(factor):
            if i or j:
                total += blocks[:, i, :, j]
    total *= np.float32(1.0 / factor**2)
    return total


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """scipy.ndimage.binary_fill_holes (4-connected background), by labelling the background."""
    background, _ = ndi.label(~mask)
    outside = np.zeros(int(background.max()) + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False
    return ~outside[background]


def _dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """scipy.ndimage.binary_dilation with the 4-neighbour cross, repeated `iterations` times."""
    grown = mask.copy()
    for _ in range(iterations):
        before = grown.copy()
        grown[1:] |= before[:-1]
        grown[:-1] |= before[1:]
        grown[:, 1:] |= before[:, :-1]
        grown[:, :-1] |= before[:, 1:]
    return grown


def _padded_slices(objects: list, shape: tuple[int, int], margin: int) -> list:
    return [
        (slice(max(0, rs.start - margin), min(shape[0], rs.stop + margin)),
         slice(max(0, cs.start - margin), min(shape[1], cs.stop + margin)))
        for rs, cs in objects
    ]


def _distance_um(
    mask: np.ndarray, parts: np.ndarray, boxes: np.ndarray, wanted: np.ndarray, pixel_size_um: float
) -> np.ndarray:
    """Euclidean distance to the nearest background pixel inside the parts of `parts` (connected
    parts of the bridged mask) with `wanted[part]`, 0 elsewhere. Computed on the parts' bounding
    boxes packed into one mosaic, one empty pixel apart; exact, as the ring around a part is
    background in the field too."""
    distance = np.zeros(mask.shape, dtype=np.float32)
    chosen = np.flatnonzero(wanted)
    if chosen.size == 0:
        return distance
    pixels, place, shape = _mosaic(parts, chosen, boxes, np.flatnonzero(mask))
    mosaic = np.zeros(shape, dtype=bool)
    mosaic[place] = True
    distance.ravel()[pixels] = ndi.distance_transform_edt(mosaic)[place] * pixel_size_um
    return distance


def _relabel(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Labels with `keep[label]` renumbered 1..N in order, the others set to 0."""
    keep = keep.copy()
    keep[0] = False
    lookup = np.zeros(keep.size, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def _flood_parts(
    regions: np.ndarray,
    seed_image: np.ndarray,
    markers: np.ndarray,
    parts: np.ndarray,
    chosen: np.ndarray,
    boxes: np.ndarray,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Watershed of the chosen parts from their markers, written into `regions`; returns the flat
    indices of the flooded pixels. The parts are packed into one small mosaic and flooded in a
    single call: each part floods alone, as in the whole field, at a fraction of the cost."""
    pixels, place, shape = _mosaic(parts, chosen, boxes, candidates)
    mosaic_seed = np.zeros(shape, dtype=np.float32)
    mosaic_markers = np.zeros(shape, dtype=np.int32)
    mosaic_mask = np.zeros(shape, dtype=bool)
    mosaic_seed[place] = seed_image.ravel()[pixels]
    mosaic_markers[place] = markers.ravel()[pixels]
    mosaic_mask[place] = True
    flooded = segmentation.watershed(-mosaic_seed, mosaic_markers, mask=mosaic_mask)
    regions.ravel()[pixels] = flooded[place]
    return pixels


def _gaussian(image: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(image, sigma, truncate=truncate) (mode "reflect") in float32,
    as two passes of shifted, paired sums (about twice as fast; differs by float32 rounding)."""
    radius = int(truncate * sigma + 0.5)
    image = np.asarray(image, dtype=np.float32)
    if radius == 0:
        return image.copy()
    weights = np.exp(-0.5 * (np.arange(radius + 1) / sigma) ** 2)
    weights = (weights / (2 * weights.sum() - weights[0])).astype(np.float32)
    for axis in (0, 1):
        size = image.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="symmetric")

        def shifted(offset: int) -> np.ndarray:
            index = [slice(None), slice(None)]
            index[axis] = slice(radius + offset, radius + offset + size)
            return padded[tuple(index)]

        result = weights[0] * shifted(0)
        for offset in range(1, radius + 1):
            result += weights[offset] * (shifted(offset) + shifted(-offset))
        image = result
    return image
