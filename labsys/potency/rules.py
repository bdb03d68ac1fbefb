"""Pure decision rules of the BV2 potency assay: scores, % inhibition, assay window, run
validity, relative potency and Westgard trending. No Flask, no database: these functions are
the specification a validator reads, and they are tested as tables.

Definitions (DESIGN.md, "Potency scoring"):

- A *field* yields a measure S (by default the activation fraction, the share of activated
  cells; the median cell area in µm² may be configured instead).
- *Well score* = median of S over the well's included fields.
- *Lot score* = mean of the well scores of the replicate wells of one condition (one lot at one
  MSC:BV2 ratio, or the LPS-only / unstimulated controls).
- *% inhibition* = 100 × (S_LPS − S_test) / (S_LPS − S_unstim).
- *Z′* = 1 − 3(σ₊ + σ₋) / |μ₊ − μ₋| over LPS-only (+) and unstimulated (−) well scores.
- *Relative potency* (test vs reference lot) = the mean % inhibition of the test lot over the
  MSC:BV2 ratios run for both lots, divided by the reference lot's mean % inhibition over the
  same ratios (a ratio-of-means estimate; 1.0 means as potent as the reference). It needs at
  least one matched ratio and a reference inhibition above zero.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

MEASURES = ("activation_fraction", "median_area_um2")


@dataclass(frozen=True)
class RuleResult:
    """One named rule, whether it passed and why (a language-neutral message)."""

    name: str
    passed: bool
    message: str


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def well_score(field_values: Iterable[float | None]) -> float | None:
    """Median of the field measures of one well; None when no field has a finite value."""
    values = _finite(field_values)
    return statistics.median(values) if values else None


def lot_score(well_scores: Iterable[float | None]) -> float | None:
    """Mean of the replicate well scores; None when there is none."""
    values = _finite(well_scores)
    return statistics.fmean(values) if values else None


def percent_inhibition(s_lps: float | None, s_test: float | None, s_unstim: float | None) -> float | None:
    """100 × (S_LPS − S_test) / (S_LPS − S_unstim); None when an input is missing or the assay
    window S_LPS − S_unstim is zero (the ratio is undefined)."""
    if s_lps is None or s_test is None or s_unstim is None:
        return None
    window = s_lps - s_unstim
    if window == 0:
        return None
    return 100.0 * (s_lps - s_test) / window


def cv_percent(values: Iterable[float | None]) -> float | None:
    """Coefficient of variation of replicate values in % (sample SD / |mean| × 100); None for
    fewer than two values; infinite when the mean is zero but the values differ."""
    data = _finite(values)
    if len(data) < 2:
        return None
    mean = statistics.fmean(data)
    sd = statistics.stdev(data)
    if mean == 0:
        return 0.0 if sd == 0 else math.inf
    return 100.0 * sd / abs(mean)


def z_prime(positive: Iterable[float | None], negative: Iterable[float | None]) -> float | None:
    """Z′ = 1 − 3(σ₊ + σ₋)/|μ₊ − μ₋| with sample SDs; None with fewer than two values in a group;
    −inf when the means are equal (no window at all)."""
    pos, neg = _finite(positive), _finite(negative)
    if len(pos) < 2 or len(neg) < 2:
        return None
    separation = abs(statistics.fmean(pos) - statistics.fmean(neg))
    spread = 3 * (statistics.stdev(pos) + statistics.stdev(neg))
    if separation == 0:
        return -math.inf
    return 1.0 - spread / separation


@dataclass(frozen=True)
class ValidityLimits:
    """The acceptance limits of a run (each configurable per run)."""

    min_cells_per_field: int = 30
    max_replicate_cv_percent: float = 20.0
    min_z_prime: float = 0.4
    reference_min_inhibition: float | None = None
    reference_max_inhibition: float | None = None


@dataclass(frozen=True)
class FieldCount:
    """One included field's cell count, for the minimum-cells rule."""

    well: str
    field_number: int
    cell_count: int


@dataclass(frozen=True)
class ReplicateGroup:
    """The well scores of one condition's replicate wells (label e.g. 'LPS only' or 'LOT-1 @ 1:10')."""

    label: str
    well_scores: tuple[float, ...]


@dataclass
class ValidityInputs:
    field_counts: Sequence[FieldCount]
    replicate_groups: Sequence[ReplicateGroup]
    lps_well_scores: Sequence[float]
    unstim_well_scores: Sequence[float]
    reference_inhibition: float | None = None
    reference_run: bool = False
    failed_fields: Sequence[str] = field(default_factory=tuple)


def rule_min_cells(inputs: ValidityInputs, limits: ValidityLimits) -> RuleResult:
    low = [f for f in inputs.field_counts if f.cell_count < limits.min_cells_per_field]
    if not inputs.field_counts:
        return RuleResult("min_cells_per_field", False, "no scored field")
    if low:
        listed = ", ".join(f"{f.well} field {f.field_number} ({f.cell_count})" for f in low)
        return RuleResult("min_cells_per_field", False,
                          f"{len(low)} field(s) below {limits.min_cells_per_field} cells: {listed}")
    return RuleResult("min_cells_per_field", True,
                      f"every field has at least {limits.min_cells_per_field} cells")


def rule_replicate_cv(inputs: ValidityInputs, limits: ValidityLimits) -> RuleResult:
    failures = []
    for group in inputs.replicate_groups:
        cv = cv_percent(group.well_scores)
        if cv is not None and cv > limits.max_replicate_cv_percent:
            failures.append(f"{group.label} CV {cv:.1f} %")
    if failures:
        return RuleResult("replicate_cv", False,
                          f"replicate CV above {limits.max_replicate_cv_percent:g} %: " + "; ".join(failures))
    return RuleResult("replicate_cv", True, f"every replicate CV ≤ {limits.max_replicate_cv_percent:g} %")


def rule_assay_window(inputs: ValidityInputs, limits: ValidityLimits) -> RuleResult:
    z = z_prime(inputs.lps_well_scores, inputs.unstim_well_scores)
    if z is None:
        return RuleResult("z_prime", False,
                          "Z′ needs at least two LPS-only and two unstimulated wells")
    if z < limits.min_z_prime:
        shown = "−∞" if z == -math.inf else f"{z:.2f}"
        return RuleResult("z_prime", False, f"Z′ {shown} below {limits.min_z_prime:g}")
    return RuleResult("z_prime", True, f"Z′ {z:.2f} ≥ {limits.min_z_prime:g}")


def rule_reference_in_limits(inputs: ValidityInputs, limits: ValidityLimits) -> RuleResult:
    if not inputs.reference_run:
        return RuleResult("reference_lot", True, "no reference lot on this plate")
    value = inputs.reference_inhibition
    if value is None:
        return RuleResult("reference_lot", False, "reference lot % inhibition could not be computed")
    low, high = limits.reference_min_inhibition, limits.reference_max_inhibition
    if (low is not None and value < low) or (high is not None and value > high):
        return RuleResult("reference_lot", False,
                          f"reference lot {value:.1f} % inhibition outside its control limits "
                          f"[{'−∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}]")
    return RuleResult("reference_lot", True, f"reference lot {value:.1f} % inhibition within its control limits")


def rule_no_failed_images(inputs: ValidityInputs, limits: ValidityLimits) -> RuleResult:
    if inputs.failed_fields:
        return RuleResult("images_scored", False,
                          "field(s) could not be scored (exclude them with a reason or re-upload): "
                          + ", ".join(inputs.failed_fields))
    return RuleResult("images_scored", True, "every included field was scored")


VALIDITY_RULES = (rule_min_cells, rule_replicate_cv, rule_assay_window, rule_reference_in_limits,
                  rule_no_failed_images)


def evaluate_validity(inputs: ValidityInputs, limits: ValidityLimits) -> list[RuleResult]:
    """Evaluate every validity rule; the run is valid only if all pass."""
    return [rule(inputs, limits) for rule in VALIDITY_RULES]


def is_valid(results: Sequence[RuleResult]) -> bool:
    return all(r.passed for r in results)


def relative_potency(test_by_ratio: Mapping[str, float | None],
                     reference_by_ratio: Mapping[str, float | None]) -> float | None:
    """Mean test % inhibition over the ratios run for both lots divided by the reference lot's
    mean % inhibition over the same ratios; None without a matched ratio or when the reference
    inhibition is not above zero."""
    matched = [r for r in test_by_ratio
               if r in reference_by_ratio and test_by_ratio[r] is not None and reference_by_ratio[r] is not None]
    if not matched:
        return None
    reference = statistics.fmean(float(reference_by_ratio[r]) for r in matched)  # type: ignore[arg-type]
    if reference <= 0:
        return None
    return statistics.fmean(float(test_by_ratio[r]) for r in matched) / reference  # type: ignore[arg-type]


# Westgard multirule QC ---------------------------------------------------------------------

WESTGARD_REJECT = ("1-3s", "2-2s", "R-4s", "4-1s", "10-x")
WESTGARD_WARNING = ("1-2s",)


def westgard_flags(values: Sequence[float], mean: float, sd: float) -> list[list[str]]:
    """For each control value (in run order), the Westgard rules that the value triggers,
    looking back over earlier values of the same control:

    - 1-2s (warning): the value is beyond mean ± 2 SD;
    - 1-3s: beyond mean ± 3 SD;
    - 2-2s: this and the previous value beyond 2 SD on the same side;
    - R-4s: this and the previous value differ by more than 4 SD, on opposite sides beyond 2 SD;
    - 4-1s: this and the previous three beyond 1 SD on the same side;
    - 10-x: this and the previous nine on the same side of the mean.
    """
    if sd <= 0:
        raise ValueError("the control SD must be positive")
    z = [(v - mean) / sd for v in values]
    flags: list[list[str]] = []
    for i, zi in enumerate(z):
        hit: list[str] = []
        if abs(zi) > 2:
            hit.append("1-2s")
        if abs(zi) > 3:
            hit.append("1-3s")
        if i >= 1:
            prev = z[i - 1]
            if (zi > 2 and prev > 2) or (zi < -2 and prev < -2):
                hit.append("2-2s")
            if abs(zi - prev) > 4 and ((zi > 2 and prev < -2) or (zi < -2 and prev > 2)):
                hit.append("R-4s")
        if i >= 3:
            window = z[i - 3:i + 1]
            if all(w > 1 for w in window) or all(w < -1 for w in window):
                hit.append("4-1s")
        if i >= 9:
            window = z[i - 9:i + 1]
            if all(w > 0 for w in window) or all(w < 0 for w in window):
                hit.append("10-x")
        flags.append(hit)
    return flags


def control_statistics(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean and sample SD of a control's history; None with fewer than two values or SD zero."""
    data = _finite(values)
    if len(data) < 2:
        return None
    sd = statistics.stdev(data)
    if sd == 0:
        return None
    return statistics.fmean(data), sd


# Calibration --------------------------------------------------------------------------------

def area_boundary(unstim_areas_um2: Sequence[float], lps_areas_um2: Sequence[float]) -> float:
    """The activated/resting area boundary proposed from control wells: midway between the
    median cell area of unstimulated wells and that of LPS-only wells. Refused when either set
    is empty or LPS cells are not larger than unstimulated cells."""
    unstim, lps = _finite(unstim_areas_um2), _finite(lps_areas_um2)
    if not unstim or not lps:
        raise ValueError("both unstimulated and LPS-only cells are needed")
    low, high = statistics.median(unstim), statistics.median(lps)
    if high <= low:
        raise ValueError("LPS-only cells are not larger than unstimulated cells: no boundary")
    return (low + high) / 2.0


# Plate geometry -----------------------------------------------------------------------------

PLATE_GEOMETRY = {24: (4, 6), 48: (6, 8), 96: (8, 12)}


def plate_wells(plate_format: int) -> list[str]:
    """Well names of a plate in row-major order, e.g. A01 … H12 for 96 wells."""
    rows, cols = PLATE_GEOMETRY[plate_format]
    return [f"{chr(ord('A') + r)}{c + 1:02d}" for r in range(rows) for c in range(cols)]


def normalise_well(name: str, plate_format: int) -> str | None:
    """'b3', 'B03' → 'B03' when the well exists on the plate; None otherwise."""
    text = name.strip().upper()
    if len(text) < 2 or not text[0].isalpha() or not text[1:].isdigit():
        return None
    well = f"{text[0]}{int(text[1:]):02d}"
    return well if well in plate_wells(plate_format) else None
