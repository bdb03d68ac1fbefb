"""Pure rules: eligibility, cord receipt limits, population doublings, passage limit, reagents, fill."""
import datetime as dt
import math
from decimal import Decimal

import pytest

from labsys.batches import rules
from labsys.batches.rules import Eligibility, Marker, MarkerResult, ReagentStatus, ScreeningOutcome

CLEAN = {m: MarkerResult.NON_REACTIVE for m in Marker}
TODAY = dt.date(2026, 11, 20)
UTC = dt.timezone.utc


def decide(markers=CLEAN, screening=ScreeningOutcome.ACCEPTABLE, consent=TODAY, specimen=TODAY, collection=TODAY):
    return rules.donor_eligibility(consent, screening, markers, specimen, collection, 7)


def test_a_donor_with_every_marker_non_reactive_and_acceptable_screening_is_eligible():
    decision = decide()
    assert decision.outcome == Eligibility.ELIGIBLE and decision.reasons == []


@pytest.mark.parametrize("marker", list(Marker))
@pytest.mark.parametrize("result", [MarkerResult.REACTIVE, MarkerResult.INDETERMINATE])
def test_any_reactive_or_indeterminate_marker_makes_the_donor_ineligible(marker, result):
    decision = decide({**CLEAN, marker: result})
    assert decision.outcome == Eligibility.INELIGIBLE
    assert len(decision.reasons) == 1


@pytest.mark.parametrize("marker", list(Marker))
def test_a_marker_not_yet_tested_leaves_eligibility_pending(marker):
    assert decide({**CLEAN, marker: MarkerResult.NOT_TESTED}).outcome == Eligibility.PENDING


def test_ineligibility_wins_over_pending_and_lists_every_reason():
    decision = decide({**CLEAN, Marker.HBSAG: MarkerResult.REACTIVE, Marker.CMV: MarkerResult.NOT_TESTED},
                      screening=ScreeningOutcome.NOT_ACCEPTABLE)
    assert decision.outcome == Eligibility.INELIGIBLE
    assert len(decision.reasons) == 3


def test_missing_consent_screening_or_specimen_date_leave_it_pending():
    assert decide(consent=None).outcome == Eligibility.PENDING
    assert decide(screening=ScreeningOutcome.PENDING).outcome == Eligibility.PENDING
    assert decide(specimen=None).outcome == Eligibility.PENDING


@pytest.mark.parametrize("offset, inside", [(-8, False), (-7, True), (0, True), (7, True), (8, False)])
def test_the_specimen_must_be_within_seven_days_of_collection(offset, inside):
    specimen = TODAY + dt.timedelta(days=offset)
    assert rules.specimen_within_window(specimen, TODAY, 7) is inside
    assert (decide(specimen=specimen).outcome == Eligibility.ELIGIBLE) is inside


def limits(collected, received, temperature=4, now=None):
    return rules.cord_receipt_problems(collected, received, Decimal(temperature),
                                       now or dt.datetime(2026, 11, 25, tzinfo=UTC), 24, 2, 8)


def test_a_cord_within_time_and_temperature_is_accepted():
    collected = dt.datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert limits(collected, collected + dt.timedelta(hours=24)) == ([], [])


def test_a_cord_received_after_the_time_limit_is_out_of_limits():
    collected = dt.datetime(2026, 11, 23, 8, tzinfo=UTC)
    impossible, out = limits(collected, collected + dt.timedelta(hours=24, minutes=1))
    assert impossible == [] and [f for f, _ in out] == ["received_at"]


@pytest.mark.parametrize("temperature, ok", [(1.9, False), (2, True), (8, True), (8.1, False), (25, False)])
def test_the_transport_temperature_must_be_in_range(temperature, ok):
    collected = dt.datetime(2026, 11, 23, 8, tzinfo=UTC)
    _impossible, out = limits(collected, collected + dt.timedelta(hours=2), temperature)
    assert (out == []) is ok


def test_future_and_out_of_order_times_are_impossible_not_deviations():
    now = dt.datetime(2026, 11, 25, tzinfo=UTC)
    impossible, _ = limits(now + dt.timedelta(hours=1), now + dt.timedelta(hours=2), now=now)
    assert {f for f, _ in impossible} == {"collected_at", "received_at"}
    impossible, _ = limits(now - dt.timedelta(hours=1), now - dt.timedelta(hours=2), now=now)
    assert [f for f, _ in impossible] == ["received_at"]


@pytest.mark.parametrize("seeded, harvested", [(1_000_000, 2_000_000), (250_000, 4_000_000), (3_000_000, 7_300_000),
                                               (5_000_000, 4_000_000)])
def test_population_doublings_are_log2_of_harvested_over_seeded(seeded, harvested):
    assert float(rules.population_doublings(seeded, harvested)) == pytest.approx(math.log2(harvested / seeded), abs=5e-4)


def test_cumulative_doublings_add_up_and_skip_unknown_values():
    assert rules.cumulative_population_doublings([None, Decimal("2.5"), Decimal("3.0")]) == \
        [Decimal("0"), Decimal("2.5"), Decimal("5.5")]


@pytest.mark.parametrize("bad", [(0, 10), (10, 0), (-1, 10)])
def test_population_doublings_need_positive_counts(bad):
    with pytest.raises(ValueError):
        rules.population_doublings(*bad)


def passage(number, previous, limit=5, seeded=1000, harvested=4000, viability=95, confluence=80, flasks=2):
    return rules.passage_problems(number, previous, limit, seeded, harvested, viability, confluence, flasks)


def test_the_next_passage_within_the_limit_is_accepted():
    assert passage(5, [0, 1, 2, 3, 4]) == []


def test_a_passage_beyond_the_limit_is_refused():
    assert [f for f, _ in passage(6, [0, 1, 2, 3, 4, 5])] == ["passage_number"]
    assert [f for f, _ in passage(4, [0, 1, 2, 3], limit=3)] == ["passage_number"]


def test_passages_must_follow_in_sequence_without_repeats():
    assert [f for f, _ in passage(3, [0, 1])] == ["passage_number"]
    assert [f for f, _ in passage(1, [0, 1])] == ["passage_number"]
    assert [f for f, _ in passage(1, [])] == ["passage_number"]


@pytest.mark.parametrize("field, values", [
    ("seeded_viable_cells", {"seeded": 0}), ("seeded_viable_cells", {"seeded": -5}),
    ("harvested_viable_cells", {"harvested": 0}), ("viability_percent", {"viability": 100.5}),
    ("viability_percent", {"viability": -1}), ("confluence_percent", {"confluence": 101}),
    ("flask_count", {"flasks": 0}),
])
def test_impossible_counts_and_percentages_are_refused_on_their_field(field, values):
    assert [f for f, _ in passage(1, [0], **values)] == [field]


def test_every_problem_is_reported_at_once():
    problems = passage(9, [0], seeded=-1, harvested=0, viability=120, confluence=-3, flasks=0)
    assert len({f for f, _ in problems}) == 6


def test_p0_may_lack_a_seeded_count_but_later_passages_may_not():
    assert rules.passage_problems(0, [], 5, None, 1000, 90, None, 1, seeded_required=False) == []
    assert [f for f, _ in rules.passage_problems(1, [0], 5, None, 1000, 90, None, 1)] == ["seeded_viable_cells"]


@pytest.mark.parametrize("status, expiry_offset, problems", [
    (ReagentStatus.RELEASED, 0, 0), (ReagentStatus.RELEASED, -1, 1), (ReagentStatus.QUARANTINE, 10, 1),
    (ReagentStatus.REJECTED, -1, 2),
])
def test_a_reagent_lot_must_be_released_and_in_date_on_the_day_of_use(status, expiry_offset, problems):
    assert len(rules.reagent_use_problems("Medium", "L1", status, TODAY + dt.timedelta(days=expiry_offset), TODAY)) == problems


def test_time_order_problems_catch_future_and_reversed_times():
    now = dt.datetime(2026, 11, 25, tzinfo=UTC)
    assert rules.time_order_problems(now - dt.timedelta(hours=2), now - dt.timedelta(hours=1), now) == []
    assert [f for f, _ in rules.time_order_problems(now + dt.timedelta(hours=1), None, now)] == ["started_at"]
    assert [f for f, _ in rules.time_order_problems(now - dt.timedelta(hours=1), now - dt.timedelta(hours=2), now)] == ["ended_at"]
    assert [f for f, _ in rules.time_order_problems(now - dt.timedelta(hours=3), None, now, now - dt.timedelta(hours=2))] == ["started_at"]


def test_fill_cannot_use_more_cells_than_were_harvested():
    assert rules.fill_problems(10, 1_000_000, 5, 90, 10_000_000) == []
    assert [f for f, _ in rules.fill_problems(11, 1_000_000, 5, 90, 10_000_000)] == ["vial_count"]
    assert {f for f, _ in rules.fill_problems(0, 0, 0, 101, None)} == {"vial_count", "viable_cells_per_vial",
                                                                        "volume_ml", "viability_percent"}
