"""BV2 potency image analysis: one field image in, per-cell measures and a field summary out.

Pure functions over numpy arrays (numpy, scipy and scikit-image only). The steps are:

1. background correction (coarse median of the field) and Gaussian denoising;
2. threshold at the background median plus a multiple of the robust noise SD, holes filled;
3. seeded watershed that splits touching cells, seeds being h-maxima of the smoothed
   log-intensity plus a distance term (a soma must stand out from the bridge to its neighbour);
   the seed scale then adapts to the objects: a connected group holding a piece bigger than any
   BV2 cell, or a large ramified piece, is segmented again with coarser seeds that keep a
   primary microglia cell's processes with it;
4. removal of debris and of slivers of cells lying outside the field; optional exclusion of
   every cell touching the field edge (the potency measurement excludes them, the validation
   against ground truth keeps them);
5. per-cell measures computed for all cells at once (measures.py, on the cell pixels only);
6. activated/resting classification and the field summary.

The image operations behind steps 1–4 live in imageops.py: cells cover a few per cent of a BV2
field, so the watershed and the distance transform run on a mosaic of the cells' bounding boxes
(mosaic.py) rather than on the whole field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy
import skimage
from scipy import ndimage as ndi
from skimage import segmentation

from labsys.potency.measures import _perimeter_px, measure_cells  # noqa: F401  (re-exported)
from labsys.potency.imageops import (  # noqa: F401  (re-exported for tests and callers)
    _background,
    _block_mean,
    _dilate_cross,
    _distance_um,
    _fill_holes,
    _flood_parts,
    _gaussian,
    _median_filter,
    _merge_regions,
    _padded_slices,
    _relabel,
    _touching_edge,
)
from labsys.potency.mosaic import boxes_of as _boxes
from labsys.potency.parameters import (  # noqa: F401  (re-exported for callers)
    DEFAULT_PARAMETER_SET_NAME,
    PARAMETER_SETS,
    ParameterSet,
    get_parameter_set,
)

ALGORITHM_VERSION = "2.0.0"

CELL_TABLE_COLUMNS = (
    "label",
    "area_um2",
    "perimeter_um",
    "circularity",
    "solidity",
    "aspect_ratio",
    "endpoints",
    "branch_length_um",
    "activated",
    "centroid_row_px",
    "centroid_col_px",
)


@dataclass
class FieldResult:
    """The outcome of scoring one field, with everything needed to reproduce it."""

    cell_count: int
    activated_count: int
    activation_fraction: float
    median_area_um2: float
    pixel_size_um: float
    parameter_set_name: str
    parameter_set_version: int
    algorithm_version: str
    library_versions: dict[str, str]
    labels: np.ndarray = field(repr=False)
    cells: dict[str, np.ndarray] = field(repr=False)
    border_cells_excluded: bool = True

    def summary(self) -> dict[str, Any]:
        """The field summary as plain JSON-serialisable values."""
        return {
            "cell_count": self.cell_count,
            "activated_count": self.activated_count,
            "activation_fraction": self.activation_fraction,
            "median_area_um2": self.median_area_um2,
            "algorithm_version": self.algorithm_version,
            "params": {"name": self.parameter_set_name, "version": self.parameter_set_version},
        }


def library_versions() -> dict[str, str]:
    """Versions of the numerical libraries the result depends on."""
    return {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-image": skimage.__version__}


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"A field image must be 2-D grayscale, got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"Unsupported image data type {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("The field image contains NaN or infinite values.")
    return array


def _as_float_image(image: np.ndarray) -> np.ndarray:
    return _check_image(image).astype(np.float32)


def _working_factor(pixel_size_um: float, params: ParameterSet) -> int:
    """Integer block size that brings the pixel size up to the parameter set's working pixel
    size (1 when the image is already as coarse)."""
    return max(1, int(np.floor(params.working_pixel_size_um / pixel_size_um + 1e-9)))


def segment(image: np.ndarray, pixel_size_um: float, params: ParameterSet) -> np.ndarray:
    """Label image (int32, same shape as `image`, 0 = background) of every cell in the field,
    border cells included.

    The field is block-averaged to the parameter set's working pixel size when it is finer (a
    16-bit BV2 field at 0.65 µm/pixel is worked at 1.3 µm/pixel); labels are returned at the
    input resolution. Debris smaller than `debris_max_area_um2` and edge slivers smaller than
    `border_fragment_max_area_um2` are removed; labels are consecutive from 1.
    Accepts 8- or 16-bit integer or float grayscale images.
    """
    labels = _segment_working(image, pixel_size_um, params)
    return _to_input_resolution(labels, np.shape(image), _working_factor(pixel_size_um, params))


def _to_input_resolution(labels: np.ndarray, shape: tuple[int, ...], factor: int) -> np.ndarray:
    if factor == 1:
        return labels
    rows, cols = labels.shape
    full = np.broadcast_to(labels[:, None, :, None], (rows, factor, cols, factor)).reshape(rows * factor, cols * factor)
    return full[: shape[0], : shape[1]]


def _segment_working(
    image: np.ndarray, pixel_size_um: float, params: ParameterSet, exclude_border: bool = False
) -> np.ndarray:
    if pixel_size_um <= 0:
        raise ValueError("pixel_size_um must be positive.")
    factor = _working_factor(pixel_size_um, params)
    raw = _block_mean(_check_image(image), factor)
    pixel_size_um = pixel_size_um * factor
    pixel_area_um2 = pixel_size_um**2
    corrected = raw - _background(raw, params.background_window_um / pixel_size_um)
    smoothing_px = params.smoothing_sigma_um / pixel_size_um
    smoothed = _gaussian(corrected, smoothing_px)

    # Robust noise level from a regular sample of about 65,000 pixels (every other pixel or
    # sparser on large fields).
    stride = max(2, int(np.sqrt(smoothed.size / 65536)))
    sample = smoothed[::stride, ::stride]
    centre = float(np.median(sample))
    noise_sd = 1.4826 * float(np.median(np.abs(sample - centre)))
    if noise_sd <= 0:
        noise_sd = float(np.std(sample))
    if noise_sd <= 0:
        return np.zeros(raw.shape, dtype=np.int32)
    mask = _fill_holes(smoothed > centre + params.threshold_noise_sd * noise_sd)
    if not mask.any():
        return np.zeros(raw.shape, dtype=np.int32)

    grown = _dilate_cross(mask, int(round(params.bridge_gap_um / pixel_size_um)))
    parts, part_count = ndi.label(grown)
    boxes = _boxes(parts)
    min_area_px = params.split_min_area_um2 / pixel_area_um2
    distance_um = None
    if params.seed_distance_weight > 0:
        # Parts too small to hold two cells of min_area_px end up as one region whatever the seeds.
        part_area = np.bincount(parts[mask], minlength=part_count + 1)
        wanted = part_area >= 2 * min_area_px
        wanted[0] = False
        distance_um = _distance_um(mask, parts, boxes, wanted, pixel_size_um)
    labels = _seeded_labels(
        corrected,
        0.0,
        noise_sd,
        mask,
        grown,
        params.seed_sigma_um / pixel_size_um,
        params.seed_prominence,
        params.seed_distance_weight,
        distance_um,
        min_area_px,
        (parts, part_count, boxes),
    )
    if params.large_cell_min_area_um2 > 0 or params.ramified_max_circularity > 0:
        labels = _resegment_large_cells(
            labels, corrected, 0.0, noise_sd, mask, (parts, part_count, boxes), distance_um, pixel_size_um, params
        )

    area_um2 = np.bincount(labels.ravel()) * pixel_area_um2
    drop = area_um2 < params.debris_max_area_um2
    touching = _touching_edge(labels)
    drop |= touching & (exclude_border | (area_um2 < params.border_fragment_max_area_um2))
    return _relabel(labels, (area_um2 > 0) & ~drop)


def _seeded_labels(
    image: np.ndarray,
    base_sigma_px: float,
    noise_sd: float,
    mask: np.ndarray,
    grown: np.ndarray,
    sigma_px: float,
    prominence: float,
    distance_weight: float,
    distance_um: np.ndarray | None,
    min_area_px: float,
    labelled_parts: tuple[np.ndarray, int, np.ndarray] | None = None,
) -> np.ndarray:
    """Seeded watershed of `grown` on the smoothed log-intensity (plus the distance term), seeds
    at every local maximum, regions then merged h-maxima style; labels restricted to `mask`.
    The flood runs only in connected parts of `grown` holding more than one seed."""
    # Smoothing `image` (already a Gaussian of `base_sigma_px`, 0 for none) further gives the seed
    # scale.
    extra = np.sqrt(max(sigma_px**2 - base_sigma_px**2, 0.0))
    smoothed = _gaussian(image, extra) if extra > 0 else image
    inside = np.flatnonzero(grown)
    values = np.log(np.maximum(smoothed.ravel()[inside], noise_sd) / noise_sd)
    if distance_weight > 0 and distance_um is not None:
        values += distance_weight * np.log1p(distance_um.ravel()[inside])
    seed_image = np.zeros(grown.shape, dtype=np.float32)
    seed_image.ravel()[inside] = values
    # Local maxima (3 × 3, edge pixels repeated beyond the field, as maximum_filter's "reflect")
    # at the grown pixels only.
    height, width = grown.shape
    flat_seed = seed_image.ravel()
    rows, cols = np.divmod(inside, width)
    row_starts = {dr: np.clip(rows + dr, 0, height - 1) * width for dr in (-1, 0, 1)}
    col_shifts = {dc: np.clip(cols + dc, 0, width - 1) for dc in (-1, 0, 1)}
    is_peak = np.ones(inside.size, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                is_peak &= values >= flat_seed[row_starts[dr] + col_shifts[dc]]
    peak_index = inside[is_peak]
    peaks = np.zeros(grown.shape, dtype=bool)
    peaks.ravel()[peak_index] = True
    markers, _ = ndi.label(peaks, structure=np.ones((3, 3)))

    if labelled_parts is None:
        parts, part_count = ndi.label(grown)
        boxes = _boxes(parts)
    else:
        parts, part_count, boxes = labelled_parts
    # Everything below looks at the grown pixels only (`inside`), not at the whole field.
    part_at = parts.ravel()[inside]
    in_mask = mask.ravel()[inside]
    peak_part = parts.ravel()[peak_index]
    seeds_per_part = np.bincount(peak_part, minlength=part_count + 1)
    # A part too small to hold two pieces of min_area_px would be merged back into one region.
    part_area = np.bincount(part_at[in_mask], minlength=part_count + 1)
    multi = (seeds_per_part >= 2) & (part_area >= 2 * min_area_px)
    multi[0] = False
    # One region per part (its first seed's label) unless the part is flooded below.
    seed_of_part = np.zeros(part_count + 1, dtype=np.int32)
    seed_of_part[peak_part[::-1]] = markers.ravel()[peak_index][::-1]
    regions = np.zeros(grown.shape, dtype=np.int32)
    regions.ravel()[inside] = seed_of_part[part_at]
    if multi.any():
        pixels = _flood_parts(regions, seed_image, markers, parts, np.flatnonzero(multi), boxes, inside)
        regions = _merge_regions(regions, seed_image, mask, prominence, min_area_px, pixels)
    regions.ravel()[inside[~in_mask]] = 0
    return regions


def _resegment_large_cells(
    labels: np.ndarray,
    image: np.ndarray,
    base_sigma_px: float,
    noise_sd: float,
    mask: np.ndarray,
    labelled_parts: tuple[np.ndarray, int, np.ndarray],
    distance_um: np.ndarray | None,
    pixel_size_um: float,
    params: ParameterSet,
) -> np.ndarray:
    """Seed scale adapted to the objects: a connected group of cells holding a piece larger than
    `large_cell_min_area_um2` (bigger than any BV2 cell), or a ramified piece (at least
    `ramified_min_area_um2` with circularity at or below `ramified_max_circularity`), is
    segmented again with the coarser large-cell seeds, which keep a primary microglia cell's
    processes with it."""
    count = int(labels.max())
    area_um2 = np.bincount(labels.ravel(), minlength=count + 1) * pixel_size_um**2
    large = (area_um2 >= params.large_cell_min_area_um2) & (params.large_cell_min_area_um2 > 0)
    candidates = (area_um2 >= params.ramified_min_area_um2) & (params.ramified_max_circularity > 0)
    candidates[0] = False
    if candidates.any():
        candidate_labels = np.where(candidates[labels], labels, 0)
        perimeter_um = _perimeter_px(candidate_labels, count) * pixel_size_um
        with np.errstate(divide="ignore", invalid="ignore"):
            circularity = 4 * np.pi * area_um2 / perimeter_um**2
        large |= candidates & (circularity <= params.ramified_max_circularity)
    large[0] = False
    if not large.any():
        return labels
    groups, group_count, boxes = labelled_parts
    flagged = np.zeros(group_count + 1, dtype=bool)
    flagged[groups[large[labels]]] = True
    flagged[0] = False
    margin = int(np.ceil(3 * params.large_cell_seed_sigma_um / pixel_size_um)) + 1
    result = labels.copy()
    offset = count
    for group in np.flatnonzero(flagged):
        r0, r1, c0, c1 = boxes[group - 1]
        window = _padded_slices([(slice(r0, r1), slice(c0, c1))], labels.shape, margin)[0]
        own = groups[window] == group
        coarse = _seeded_labels(
            image[window],
            base_sigma_px,
            noise_sd,
            mask[window] & own,
            own,
            params.large_cell_seed_sigma_um / pixel_size_um,
            params.large_cell_seed_prominence,
            params.large_cell_seed_distance_weight,
            None if distance_um is None else distance_um[window],
            params.split_min_area_um2 / pixel_size_um**2,
        )
        result[window][own] = np.where(coarse[own] > 0, coarse[own] + offset, 0)
        offset += int(coarse.max())
    return result


def exclude_border_cells(labels: np.ndarray) -> np.ndarray:
    """The label image without cells touching the field edge, relabelled from 1."""
    present = np.bincount(labels.ravel()) > 0
    return _relabel(labels, present & ~_touching_edge(labels))


def classify_cells(cells: dict[str, np.ndarray], params: ParameterSet) -> np.ndarray:
    """Activated (True) or resting (False) per cell: large cells are activated, and so are
    mid-sized cells with a low circularity (polymorphic, with projections)."""
    area = cells["area_um2"]
    by_size = area >= params.activated_min_area_um2
    by_shape = (area >= params.shape_rule_min_area_um2) & (cells["circularity"] <= params.activated_max_circularity)
    return by_size | by_shape


def score_field(
    image: np.ndarray, pixel_size_um: float, params: ParameterSet, exclude_border: bool = True
) -> FieldResult:
    """Segment, measure and classify one field and summarise it.

    With `exclude_border` (the potency rule) cells touching the field edge are left out of the
    label image, the cell table and the summary. activation_fraction and median_area_um2 are
    0.0 and NaN when no cell is found.
    """
    factor = _working_factor(pixel_size_um, params)
    labels = _segment_working(image, pixel_size_um, params, exclude_border=exclude_border)
    # Measured at the working resolution, where the segmentation was made.
    cells = measure_cells(labels, pixel_size_um * factor)
    cells["centroid_row_px"] = (cells["centroid_row_px"] + 0.5) * factor - 0.5
    cells["centroid_col_px"] = (cells["centroid_col_px"] + 0.5) * factor - 0.5
    labels = _to_input_resolution(labels, np.shape(image), factor)
    activated = classify_cells(cells, params)
    cells["activated"] = activated
    cell_count = int(activated.size)
    activated_count = int(activated.sum())
    return FieldResult(
        cell_count=cell_count,
        activated_count=activated_count,
        activation_fraction=activated_count / cell_count if cell_count else 0.0,
        median_area_um2=float(np.median(cells["area_um2"])) if cell_count else float("nan"),
        pixel_size_um=float(pixel_size_um),
        parameter_set_name=params.name,
        parameter_set_version=params.version,
        algorithm_version=ALGORITHM_VERSION,
        library_versions=library_versions(),
        labels=labels,
        cells=cells,
        border_cells_excluded=exclude_border,
    )


def contrast_stretch(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """The image scaled to uint8 between two intensity percentiles."""
    raw = _as_float_image(image)
    low, high = np.percentile(raw, [low_percentile, high_percentile])
    if high <= low:
        high = low + 1
    return (np.clip((raw - low) / (high - low), 0, 1) * 255).astype(np.uint8)


ACTIVATED_COLOUR = (255, 140, 0)
RESTING_COLOUR = (0, 220, 255)


def outline_overlay(image: np.ndarray, labels: np.ndarray, activated_mask_per_label: np.ndarray) -> np.ndarray:
    """RGB uint8 picture of the contrast-stretched field with each cell's outline drawn in orange
    (activated) or cyan (resting). `activated_mask_per_label[i]` is the class of label i + 1."""
    grey = contrast_stretch(image)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    labels = np.asarray(labels)
    flags = np.asarray(activated_mask_per_label, dtype=bool)
    classes = np.zeros(max(int(labels.max()), flags.size) + 1, dtype=np.int8)
    classes[1 : flags.size + 1] = np.where(flags, 2, 1)
    outline = segmentation.find_boundaries(labels, mode="inner") & (labels > 0)
    cls = classes[labels]
    rgb[outline & (cls == 2)] = ACTIVATED_COLOUR
    rgb[outline & (cls == 1)] = RESTING_COLOUR
    return rgb
