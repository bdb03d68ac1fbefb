"""Pure potency rules: scores, % inhibition, Z′, validity, relative potency, Westgard."""
from __future__ import annotations

import math

import pytest

from labsys.potency import rules
from labsys.potency.rules import FieldCount, ReplicateGroup, ValidityInputs, ValidityLimits
from labsys.potency.states import RUN_TRANSITIONS, RunState, check_run_transition
from labsys.errors import InvalidTransition


@pytest.mark.parametrize("fields, expected", [
    ([0.2, 0.4, 0.9], 0.4),
    ([0.2, 0.4], pytest.approx(0.3)),
    ([0.5, None, float("nan")], 0.5),
    ([], None),
])
def test_well_score_is_the_median_over_fields(fields, expected):
    assert rules.well_score(fields) == expected


@pytest.mark.parametrize("wells, expected", [
    ([0.2, 0.4, 0.9], pytest.approx(0.5)),
    ([0.3], 0.3),
    ([], None),
])
def test_lot_score_is_the_mean_of_replicate_wells(wells, expected):
    assert rules.lot_score(wells) == expected


@pytest.mark.parametrize("s_lps, s_test, s_unstim, expected", [
    (0.6, 0.6, 0.1, 0.0),
    (0.6, 0.1, 0.1, 100.0),
    (0.6, 0.35, 0.1, 50.0),
    (0.6, 0.7, 0.1, -20.0),
    (0.5, 0.3, 0.5, None),  # no assay window
    (None, 0.3, 0.1, None),
])
def test_percent_inhibition_follows_the_formula(s_lps, s_test, s_unstim, expected):
    result = rules.percent_inhibition(s_lps, s_test, s_unstim)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_replicate_cv_uses_the_sample_sd():
    assert rules.cv_percent([10, 12, 14]) == pytest.approx(100 * 2 / 12)
    assert rules.cv_percent([5]) is None
    assert rules.cv_percent([0, 0]) == 0.0
    assert rules.cv_percent([-1, 1]) == math.inf


def test_z_prime_of_a_wide_window_is_high_and_of_overlapping_groups_negative():
    assert rules.z_prime([0.60, 0.62, 0.58], [0.10, 0.12, 0.08]) == pytest.approx(1 - 3 * (0.02 + 0.02) / 0.5)
    assert rules.z_prime([0.5, 0.3], [0.4, 0.2]) < 0
    assert rules.z_prime([0.5], [0.1, 0.2]) is None
    assert rules.z_prime([0.5, 0.5], [0.5, 0.5]) == -math.inf


def _inputs(**overrides) -> ValidityInputs:
    base = dict(
        field_counts=[FieldCount("A01", 1, 120), FieldCount("A02", 1, 95)],
        replicate_groups=[ReplicateGroup("LPS only", (0.60, 0.62, 0.61)),
                          ReplicateGroup("LOT-1 @ 1:10", (0.30, 0.31, 0.29))],
        lps_well_scores=[0.60, 0.62, 0.61],
        unstim_well_scores=[0.10, 0.11, 0.09],
        reference_inhibition=55.0, reference_run=True,
    )
    base.update(overrides)
    return ValidityInputs(**base)


LIMITS = ValidityLimits(min_cells_per_field=50, max_replicate_cv_percent=20, min_z_prime=0.4,
                        reference_min_inhibition=40, reference_max_inhibition=80)


def test_a_run_that_meets_every_rule_is_valid():
    results = rules.evaluate_validity(_inputs(), LIMITS)
    assert rules.is_valid(results)
    assert [r.name for r in results] == ["min_cells_per_field", "replicate_cv", "z_prime",
                                         "reference_lot", "images_scored"]


@pytest.mark.parametrize("overrides, failing", [
    (dict(field_counts=[FieldCount("B03", 2, 12)]), {"min_cells_per_field"}),
    (dict(replicate_groups=[ReplicateGroup("LOT-1 @ 1:10", (0.2, 0.4, 0.3))]), {"replicate_cv"}),
    (dict(lps_well_scores=[0.3, 0.6], unstim_well_scores=[0.1, 0.3]), {"z_prime"}),
    (dict(reference_inhibition=20.0), {"reference_lot"}),
    (dict(reference_inhibition=None), {"reference_lot"}),
    (dict(failed_fields=["C01 field 1"]), {"images_scored"}),
    (dict(field_counts=[FieldCount("B03", 2, 12)], reference_inhibition=95.0,
          lps_well_scores=[0.3], unstim_well_scores=[0.1, 0.2]),
     {"min_cells_per_field", "reference_lot", "z_prime"}),
])
def test_every_failing_validity_rule_is_reported_with_its_reason(overrides, failing):
    results = rules.evaluate_validity(_inputs(**overrides), LIMITS)
    assert not rules.is_valid(results)
    assert {r.name for r in results if not r.passed} == failing
    assert all(r.message for r in results if not r.passed)


def test_the_low_cell_field_is_named_in_the_reason():
    results = rules.evaluate_validity(_inputs(field_counts=[FieldCount("B03", 2, 12)]), LIMITS)
    assert "B03 field 2 (12)" in results[0].message


def test_a_plate_without_reference_lot_passes_the_reference_rule():
    result = rules.rule_reference_in_limits(_inputs(reference_run=False, reference_inhibition=None), LIMITS)
    assert result.passed


@pytest.mark.parametrize("test, reference, expected", [
    ({"1:10": 50.0, "1:50": 30.0}, {"1:10": 50.0, "1:50": 30.0}, 1.0),
    ({"1:10": 25.0, "1:50": 15.0}, {"1:10": 50.0, "1:50": 30.0}, 0.5),
    ({"1:10": 60.0, "1:5": 90.0}, {"1:10": 40.0, "1:50": 30.0}, 1.5),  # only 1:10 is matched
    ({"1:5": 60.0}, {"1:10": 40.0}, None),
    ({"1:10": 60.0}, {"1:10": 0.0}, None),
])
def test_relative_potency_is_a_ratio_of_means_at_matched_ratios(test, reference, expected):
    result = rules.relative_potency(test, reference)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("values, index, expected", [
    ([0.0, 2.5], 1, {"1-2s"}),
    ([0.0, 3.5], 1, {"1-2s", "1-3s"}),
    ([2.5, 2.2], 1, {"1-2s", "2-2s"}),
    ([-2.5, -2.2], 1, {"1-2s", "2-2s"}),
    ([2.1, -2.1], 1, {"1-2s", "R-4s"}),
    ([1.5, 1.2, 1.1, 1.3], 3, {"4-1s"}),
    ([0.5] * 10, 9, {"10-x"}),
    ([0.5] * 9 + [-0.5], 9, set()),
    ([0.1, -0.2, 0.3], 2, set()),
])
def test_westgard_rules_flag_the_control_value_that_breaks_them(values, index, expected):
    flags = rules.westgard_flags(values, mean=0.0, sd=1.0)
    assert set(flags[index]) == expected


def test_westgard_needs_a_positive_sd():
    with pytest.raises(ValueError):
        rules.westgard_flags([1.0], mean=1.0, sd=0)


def test_control_statistics_need_two_distinct_values():
    assert rules.control_statistics([1.0]) is None
    assert rules.control_statistics([2.0, 2.0]) is None
    mean, sd = rules.control_statistics([1.0, 3.0])
    assert (mean, sd) == (2.0, pytest.approx(math.sqrt(2)))


def test_area_boundary_lies_midway_between_control_medians():
    assert rules.area_boundary([100, 120, 140], [400, 500, 600]) == pytest.approx(310)
    with pytest.raises(ValueError):
        rules.area_boundary([300], [200])
    with pytest.raises(ValueError):
        rules.area_boundary([], [200])


@pytest.mark.parametrize("plate, count, last", [(24, 24, "D06"), (48, 48, "F08"), (96, 96, "H12")])
def test_plate_formats_have_their_wells(plate, count, last):
    wells = rules.plate_wells(plate)
    assert len(wells) == count and wells[-1] == last and wells[0] == "A01"


@pytest.mark.parametrize("name, plate, expected", [
    ("b3", 96, "B03"), ("B03", 24, "B03"), ("H12", 24, None), ("Z1", 96, None), ("3B", 96, None),
])
def test_well_names_are_normalised_to_the_plate(name, plate, expected):
    assert rules.normalise_well(name, plate) == expected


@pytest.mark.parametrize("current", list(RunState))
@pytest.mark.parametrize("target", list(RunState))
def test_run_transitions_follow_the_table(current, target):
    if target in RUN_TRANSITIONS[current]:
        check_run_transition(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_run_transition(current, target)


def test_an_approved_run_is_final():
    assert RUN_TRANSITIONS[RunState.APPROVED] == frozenset()


def test_the_levey_jennings_chart_marks_rejected_points_with_shape_and_rule_names():
    from dataclasses import dataclass

    from labsys.potency.svg import levey_jennings_svg

    @dataclass
    class Point:
        value: float
        run_code: str
        flags: list

    values = [50.0, 52.0, 48.0, 51.0, 70.0]
    stats = rules.control_statistics(values[:4])
    flags = rules.westgard_flags(values, *stats)
    svg = str(levey_jennings_svg([Point(v, f"R{i}", f) for i, (v, f) in enumerate(zip(values, flags))], stats, "Ref"))
    assert "1-3s" in flags[-1]
    assert svg.count('class="lj-point lj-reject"') == 1 and "1-3s" in svg
    assert svg.count("<circle") == 4 and "mean" in svg and "R4" in svg
