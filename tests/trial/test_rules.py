"""Pure trial rules: eligibility, permuted blocks, dose and endotoxin (no app, no database)."""
from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from decimal import Decimal

import pytest

from labsys.trial import rules
from labsys.trial.rules import (EligibilityCriteria, ScreeningAnswers, check_dose, check_eligibility,
                                check_endotoxin, eligibility_status, endotoxin_eu_per_kg,
                                generate_block_list, target_cells, vials_needed)

CRITERIA = EligibilityCriteria(18, 75, ("pregnancy", "active malignancy"))
TODAY = dt.date(2026, 11, 25)


def answers(**overrides):
    values = dict(age_years=40, consent_date=TODAY, diagnosis_severe_viral_pneumonia=True,
                  exclusions_present={"pregnancy": False, "active malignancy": False},
                  weight_kg=Decimal("70"), screening_date=TODAY)
    values.update(overrides)
    return ScreeningAnswers(**values)


@pytest.mark.parametrize("age, status", [(17, "ineligible"), (18, "eligible"), (75, "eligible"),
                                         (76, "ineligible"), (None, "pending")])
def test_age_must_lie_within_the_trial_range(age, status):
    assert eligibility_status(check_eligibility(answers(age_years=age), CRITERIA)) == status


@pytest.mark.parametrize("weight, status", [(0, "ineligible"), (29.9, "ineligible"), (30, "eligible"),
                                            (300, "eligible"), (400, "ineligible")])
def test_implausible_weights_are_refused(weight, status):
    assert eligibility_status(check_eligibility(answers(weight_kg=Decimal(str(weight))), CRITERIA)) == status


def test_missing_consent_or_unconfirmed_diagnosis_leaves_eligibility_pending():
    assert eligibility_status(check_eligibility(answers(consent_date=None), CRITERIA)) == "pending"
    assert eligibility_status(check_eligibility(answers(diagnosis_severe_viral_pneumonia=None), CRITERIA)) == "pending"


def test_consent_dated_after_screening_is_refused():
    results = check_eligibility(answers(consent_date=TODAY + dt.timedelta(days=1)), CRITERIA)
    assert [r.name for r in rules.failures(results)] == ["consent"]


def test_every_failed_criterion_is_reported_at_once():
    results = check_eligibility(answers(age_years=76, diagnosis_severe_viral_pneumonia=False,
                                        exclusions_present={"pregnancy": True}), CRITERIA)
    names = {r.name for r in rules.failures(results)}
    assert names == {"age", "diagnosis", "exclusion:pregnancy"}
    assert any(r.pending and r.name == "exclusion:active malignancy" for r in results)


def test_age_from_year_of_birth_is_the_age_reached_that_year():
    assert rules.age_on(1950, dt.date(2026, 1, 1)) == 76


@pytest.mark.parametrize("seed", range(20))
def test_each_block_is_balanced_and_sized_from_the_allowed_sizes(seed):
    entries = generate_block_list(40, (2, 4), rng=random.Random(seed))
    assert len(entries) >= 40
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
    blocks: dict[int, list] = {}
    for entry in entries:
        blocks.setdefault(entry.block_number, []).append(entry)
    for members in blocks.values():
        assert len(members) == members[0].block_size in (2, 4)
        counts = Counter(e.arm for e in members)
        assert counts["control"] == counts["msc"]
    overall = Counter(e.arm for e in entries)
    assert overall["control"] == overall["msc"]  # whole blocks: exactly 1:1


def test_an_unequal_ratio_is_kept_within_each_block():
    entries = generate_block_list(30, (3, 6), ratio=(1, 2), rng=random.Random(7))
    for number in {e.block_number for e in entries}:
        members = [e for e in entries if e.block_number == number]
        counts = Counter(e.arm for e in members)
        assert counts["msc"] == 2 * counts["control"]


def test_a_seed_gives_the_same_list_and_different_seeds_differ():
    first = generate_block_list(40, rng=random.Random(42))
    assert first == generate_block_list(40, rng=random.Random(42))
    assert any(generate_block_list(40, rng=random.Random(s)) != first for s in range(43, 48))


def test_the_default_source_is_cryptographic_and_varies():
    lists = {tuple(e.arm for e in generate_block_list(40)) for _ in range(5)}
    assert len(lists) > 1


def test_both_block_sizes_are_used():
    entries = generate_block_list(200, (2, 4), rng=random.Random(3))
    assert {e.block_size for e in entries} == {2, 4}


@pytest.mark.parametrize("sizes", [(3,), (2, 5), ()])
def test_block_sizes_that_cannot_hold_the_ratio_are_refused(sizes):
    with pytest.raises(ValueError):
        generate_block_list(10, sizes)


@pytest.mark.parametrize("dose, weight, expected", [
    (1_000_000, Decimal("70"), 70_000_000),
    (1_000_000, Decimal("62.5"), 62_500_000),
    (1_000_000, Decimal("48.35"), 48_350_000),
    (2_000_000, 100, 200_000_000),
])
def test_target_cells_are_dose_per_kg_times_weight(dose, weight, expected):
    assert target_cells(dose, weight) == expected


@pytest.mark.parametrize("weight", [0, -5])
def test_target_for_a_non_positive_weight_is_refused(weight):
    with pytest.raises(ValueError):
        target_cells(1_000_000, weight)


@pytest.mark.parametrize("target, per_vial, viability, expected", [
    (70_000_000, 20_000_000, None, 4),
    (60_000_000, 20_000_000, None, 3),
    (60_000_000, 20_000_000, Decimal("0.85"), 4),   # 17e6 viable per vial after thaw
    (40_000_000, 20_000_000, Decimal("1"), 2),
    (1, 20_000_000, None, 1),
])
def test_vials_needed_rounds_up_after_post_thaw_viability(target, per_vial, viability, expected):
    assert vials_needed(target, per_vial, viability) == expected


@pytest.mark.parametrize("viability", [Decimal("0"), Decimal("1.2")])
def test_impossible_post_thaw_viability_is_refused(viability):
    with pytest.raises(ValueError):
        vials_needed(10, 5, viability)


@pytest.mark.parametrize("delivered, passed, ratio", [
    (70_000_000, True, Decimal("1.000")),
    (56_000_000, True, Decimal("0.800")),
    (84_000_000, True, Decimal("1.200")),
    (55_900_000, False, Decimal("0.799")),
    (84_100_000, False, Decimal("1.201")),
])
def test_delivered_dose_must_be_within_tolerance_of_target(delivered, passed, ratio):
    result = check_dose(70_000_000, delivered, Decimal("0.20"))
    assert result.passed is passed
    assert result.ratio == ratio
    if not passed:
        assert "outside the allowed 80.0–120.0 %" in result.reasons[0]


def test_a_dose_above_the_cap_is_refused_even_within_tolerance():
    result = check_dose(110_000_000, 120_000_000, Decimal("0.20"), max_cells=100_000_000)
    assert not result.passed
    assert [r.name for r in rules.failures(result.results)] == ["dose_cap"]
    assert check_dose(90_000_000, 95_000_000, Decimal("0.2"), max_cells=100_000_000).passed


@pytest.mark.parametrize("eu_per_ml, volume, weight, expected, passed", [
    (Decimal("0.5"), Decimal("100"), Decimal("70"), Decimal("0.7143"), True),
    (Decimal("1"), Decimal("350"), Decimal("70"), Decimal("5.0000"), True),
    (Decimal("1"), Decimal("351"), Decimal("70"), Decimal("5.0143"), False),
    (Decimal("2"), Decimal("100"), Decimal("35"), Decimal("5.7143"), False),
])
def test_endotoxin_per_kg_comes_from_the_lot_result_and_is_refused_above_5(eu_per_ml, volume, weight,
                                                                           expected, passed):
    value = endotoxin_eu_per_kg(eu_per_ml, volume, weight)
    assert value == expected
    assert check_endotoxin(value).passed is passed


@pytest.mark.parametrize("recorded, today, expected", [
    (None, dt.date(2026, 1, 1), "planned"),
    (None, dt.date(2026, 1, 12), "due"),
    (None, dt.date(2026, 1, 18), "missed"),
    ("done", dt.date(2026, 3, 1), "done"),
    ("missed", dt.date(2026, 1, 2), "missed"),
])
def test_a_visit_past_its_window_without_data_shows_as_missed(recorded, today, expected):
    assert rules.visit_status(dt.date(2026, 1, 1), 14, recorded, today) == expected


def test_visit_schedule_must_start_on_day_one_and_end_within_follow_up():
    assert rules.parse_visit_days("1, 7,14,28,90", 90) == (1, 7, 14, 28, 90)
    for text in ("7,14", "1,120", "1,x"):
        with pytest.raises(ValueError):
            rules.parse_visit_days(text, 90)


def test_length_of_stay_counts_days_between_admission_and_discharge():
    assert rules.length_of_stay_days(dt.date(2026, 1, 1), dt.date(2026, 1, 15)) == 14
    with pytest.raises(ValueError):
        rules.length_of_stay_days(dt.date(2026, 1, 15), dt.date(2026, 1, 1))


def test_the_summary_plot_draws_one_line_per_group_without_script():
    from labsys.trial.followup import line_plot

    svg = line_plot("CRP", [1, 3, 7, 14], {"A": [Decimal("80"), Decimal("60"), None, Decimal("20")],
                                          "B": [Decimal("82"), Decimal("75"), Decimal("70"), None]})
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and svg.count("<circle") == 6
    assert "<script" not in svg and "style=" not in svg
    empty = line_plot("IL-6 <test>", [1, 3], {"All": [None, None]})
    assert "No data yet" in empty and "&lt;test&gt;" in empty
