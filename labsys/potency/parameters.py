"""Named, versioned parameter sets for BV2 potency image analysis.

A parameter set is locked once it has been calibrated on an assay's control wells; any change to a
number means a new version. The app stores calibrated sets in its database through
`ParameterSet.to_dict` / `ParameterSet.from_dict`; the built-in sets live in `PARAMETER_SETS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ParameterSet:
    """Every numeric knob of the segmentation and the activated/resting classifier.

    Lengths are in micrometres and areas in square micrometres, so one set serves any pixel size.

    Segmentation:
    - working_pixel_size_um: finer images are block-averaged by a whole factor towards this
      pixel size before segmentation (speed; cells of 10 µm and more lose nothing).
    - background_window_um: width of the median window that estimates uneven illumination.
    - smoothing_sigma_um: Gaussian denoising before thresholding.
    - threshold_noise_sd: a pixel is cell when it exceeds the background median by this many
      robust noise standard deviations (1.4826 × MAD of the background-corrected image).
    - bridge_gap_um: gaps up to about this width between a cell and a detached piece of its own
      process are bridged for labelling (the piece takes the cell's label; the gap stays empty).
    - seed_sigma_um: Gaussian smoothing of the intensity image whose maxima seed the watershed.
    - seed_prominence: a seed must rise this much above the saddle to a brighter seed, in natural
      log units of noise-scaled intensity (1.0 means the dimmer soma is e ≈ 2.7× brighter than
      the dimmest point of the bridge joining them).
    - seed_distance_weight: weight of log(1 + distance to the mask edge in µm) added to the seed
      image, so that two touching round cells of even brightness still give two seeds.
    - split_min_area_um2: a watershed piece smaller than this is merged into its neighbour
      instead of being reported as a cell.
    - large_cell_min_area_um2, ramified_min_area_um2, ramified_max_circularity: the seed scale
      adapts to the objects. A piece of the first watershed larger than large_cell_min_area_um2
      (bigger than any BV2 cell), or at least ramified_min_area_um2 with a circularity at or
      below ramified_max_circularity (a ramified cell with thin processes), marks its connected
      group of cells as primary-microglia-like; that group is segmented again with the coarser
      large-cell seeds, which keep each cell's processes with it. 0 for large_cell_min_area_um2
      and ramified_max_circularity turns the second pass off.
    - large_cell_seed_sigma_um, large_cell_seed_prominence, large_cell_seed_distance_weight:
      seed smoothing, prominence and distance weight of that second pass.
    - debris_max_area_um2: objects smaller than this are debris and dropped.
    - border_fragment_max_area_um2: objects touching the field edge and smaller than this are
      slivers of cells lying outside the field and are dropped (applied whether or not border
      cells are excluded from scoring).

    Classification (a cell is activated when either rule holds):
    - activated_min_area_um2: area at or above which a cell is activated whatever its shape.
    - shape_rule_min_area_um2 and activated_max_circularity: a cell at least this large whose
      circularity 4πA/P² is at or below the limit is activated (polymorphic, with projections).
    """

    name: str
    version: int
    working_pixel_size_um: float = 1.3
    background_window_um: float = 95.0
    smoothing_sigma_um: float = 1.1
    threshold_noise_sd: float = 9.0
    bridge_gap_um: float = 2.3
    seed_sigma_um: float = 4.5
    seed_prominence: float = 1.0
    seed_distance_weight: float = 0.0
    split_min_area_um2: float = 60.0
    large_cell_min_area_um2: float = 600.0
    large_cell_seed_sigma_um: float = 4.5
    large_cell_seed_prominence: float = 1.0
    large_cell_seed_distance_weight: float = 0.0
    ramified_min_area_um2: float = 300.0
    ramified_max_circularity: float = 0.45
    debris_max_area_um2: float = 40.0
    border_fragment_max_area_um2: float = 200.0
    activated_min_area_um2: float = 320.0
    shape_rule_min_area_um2: float = 200.0
    activated_max_circularity: float = 0.45

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("A parameter set needs a name.")
        if int(self.version) < 1:
            raise ValueError("A parameter set version is a positive integer.")
        for field in dataclasses.fields(self):
            if field.name in ("name", "version"):
                continue
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Parameter {field.name} must be a non-negative number, got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-serialisable values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ParameterSet":
        """Build a set from a dict such as `to_dict` returns; unknown keys are refused."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown parameter(s) for a potency parameter set: {', '.join(unknown)}.")
        missing = sorted({"name", "version"} - set(values))
        if missing:
            raise ValueError(f"A parameter set dict needs {', '.join(missing)}.")
        converted = {
            key: (str(value) if key == "name" else int(value) if key == "version" else float(value))
            for key, value in values.items()
        }
        return cls(**converted)

    @property
    def label(self) -> str:
        """`name` and `version` together, e.g. `bv2-default-v1 (version 1)`."""
        return f"{self.name} (version {self.version})"


DEFAULT_PARAMETER_SET_NAME = "bv2-default-v1"
MICROGLIA_PARAMETER_SET_NAME = "microglia-primary-v1"

# The default set is the one that scores potency, and the one validated both against synthetic
# BV2 fields with known truth and against the EMBL primary microglia ground-truth masks (per frame
# foreground IoU and object F1 >= 0.85). Its seed scale adapts to the objects: fine seeds (with
# the distance term) split touching resting BV2 cells, and connected groups holding a piece bigger
# than any BV2 cell or a large ramified piece are segmented again with coarse seeds, which keep a
# primary microglia cell's thin processes with it. The microglia set uses the coarse seeds
# everywhere; it is kept for stored results that name it.
PARAMETER_SETS: dict[str, ParameterSet] = {
    DEFAULT_PARAMETER_SET_NAME: ParameterSet(
        name=DEFAULT_PARAMETER_SET_NAME,
        version=1,
        seed_sigma_um=2.5,
        seed_prominence=0.3,
        seed_distance_weight=0.5,
        activated_min_area_um2=220.0,
        shape_rule_min_area_um2=150.0,
        activated_max_circularity=0.6,
    ),
    MICROGLIA_PARAMETER_SET_NAME: ParameterSet(
        name=MICROGLIA_PARAMETER_SET_NAME,
        version=1,
        seed_sigma_um=4.5,
        seed_prominence=1.0,
        seed_distance_weight=0.0,
    ),
}


def get_parameter_set(name: str) -> ParameterSet:
    """The built-in parameter set called `name`; KeyError naming the known sets otherwise."""
    try:
        return PARAMETER_SETS[name]
    except KeyError:
        known = ", ".join(sorted(PARAMETER_SETS))
        raise KeyError(f"Unknown potency parameter set {name!r}; known sets: {known}.") from None
