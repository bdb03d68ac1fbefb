"""Release rules are pure: every criterion at, just inside and just outside its limits, missing and
pending; process rules; every rule evaluated, never stopping at the first failure."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from labsys.release.defaults import DEFAULT_CRITERIA, FLOW_PANEL
from labsys.release.rules import (POTENCY_TEST_CODE, BatchFacts, Criterion, CriterionKind, Disposition,
                                  PotencyFact, ResultFact, Verdict, evaluate_release, numeric_rule,
                                  pass_fail_rule, text_rule)

BY_CODE = {c.test_code: c for c in DEFAULT_CRITERIA}


def num(value: str, unit: str | None) -> ResultFact:
    return ResultFact(numeric_value=D(value), unit=unit)


def txt(value: str) -> ResultFact:
    return ResultFact(text_value=value)


def passing_results() -> dict[str, ResultFact]:
    results = {"APPEARANCE": txt("conforms"), "VIABLE_CELLS": num("10", "x10^6 cells/vial"),
               "VIABILITY": num("92", "%"), "STERILITY": txt("no growth"), "MYCOPLASMA": txt("negative"),
               "ENDOTOXIN": num("0.1", "EU/mL"), "KARYOTYPE": txt("normal")}
    for marker in ("CD73", "CD90", "CD105"):
        results[marker] = num("99", "%")
    for marker in ("CD34", "CD45", "CD11B", "CD19", "HLA_DR"):
        results[marker] = num("0.5", "%")
    return results


def good_facts(**changes) -> BatchFacts:
    facts = BatchFacts(donor_eligible=True, open_deviation_count=0, max_passage=4, passage_limit=5,
                       unverified_result_count=0, potency=PotencyFact(D("35.2"), True, "PR-2026-0001"),
                       results=passing_results())
    return replace(facts, **changes)


NUMERIC_TABLE = [
    # code, value, verdict
    ("VIABILITY", "80", Verdict.PASS), ("VIABILITY", "80.01", Verdict.PASS), ("VIABILITY", "79.99", Verdict.OOS),
    ("VIABLE_CELLS", "8", Verdict.PASS), ("VIABLE_CELLS", "8.01", Verdict.PASS), ("VIABLE_CELLS", "7.99", Verdict.OOS),
    ("VIABLE_CELLS", "12", Verdict.PASS), ("VIABLE_CELLS", "11.99", Verdict.PASS), ("VIABLE_CELLS", "12.01", Verdict.OOS),
    ("ENDOTOXIN", "0.5", Verdict.PASS), ("ENDOTOXIN", "0.49", Verdict.PASS), ("ENDOTOXIN", "0.51", Verdict.OOS),
    ("BV2_POTENCY", "20", Verdict.PASS), ("BV2_POTENCY", "20.1", Verdict.PASS), ("BV2_POTENCY", "19.9", Verdict.OOS),
    *[(m, v, verdict) for m in ("CD73", "CD90", "CD105")
      for v, verdict in (("95", Verdict.PASS), ("95.1", Verdict.PASS), ("94.9", Verdict.OOS))],
    *[(m, v, verdict) for m in ("CD34", "CD45", "CD11B", "CD19", "HLA_DR")
      for v, verdict in (("2", Verdict.PASS), ("1.9", Verdict.PASS), ("2.1", Verdict.OOS))],
]


@pytest.mark.parametrize("code,value,verdict", NUMERIC_TABLE)
def test_numeric_criteria_judge_values_at_inside_and_outside_their_limits(code, value, verdict):
    criterion = BY_CODE[code]
    outcome = numeric_rule(criterion, num(value, criterion.unit))
    assert outcome.verdict == verdict
    assert value.rstrip("0").rstrip(".") in outcome.message or value in outcome.message
    assert criterion.limit_text in outcome.message


@pytest.mark.parametrize("code", [c.test_code for c in DEFAULT_CRITERIA])
def test_a_missing_result_fails_unless_the_criterion_may_be_pending(code):
    criterion = BY_CODE[code]
    rule = {CriterionKind.NUMERIC: numeric_rule, CriterionKind.TEXT: text_rule,
            CriterionKind.PASS_FAIL: pass_fail_rule}[criterion.kind]
    outcome = rule(criterion, None)
    assert outcome.verdict == (Verdict.PENDING if criterion.may_be_pending else Verdict.FAIL)
    assert criterion.name in outcome.message


@pytest.mark.parametrize("code", [c.test_code for c in DEFAULT_CRITERIA])
def test_a_pending_result_is_pending_and_only_sterility_may_be(code):
    criterion = BY_CODE[code]
    rule = {CriterionKind.NUMERIC: numeric_rule, CriterionKind.TEXT: text_rule,
            CriterionKind.PASS_FAIL: pass_fail_rule}[criterion.kind]
    outcome = rule(criterion, ResultFact(pending=True))
    assert outcome.verdict == Verdict.PENDING
    assert outcome.may_be_pending == (code == "STERILITY")


@pytest.mark.parametrize("code,value,verdict", [
    ("STERILITY", "no growth", Verdict.PASS), ("STERILITY", "No  Growth ", Verdict.PASS),
    ("STERILITY", "growth", Verdict.OOS), ("MYCOPLASMA", "negative", Verdict.PASS),
    ("MYCOPLASMA", "positive", Verdict.OOS), ("KARYOTYPE", "normal", Verdict.PASS),
    ("KARYOTYPE", "abnormal", Verdict.OOS),
])
def test_text_criteria_must_equal_the_expected_text(code, value, verdict):
    outcome = text_rule(BY_CODE[code], txt(value))
    assert outcome.verdict == verdict
    assert BY_CODE[code].expected_text in outcome.message


@pytest.mark.parametrize("value,verdict", [("conforms", Verdict.PASS), ("pass", Verdict.PASS),
                                           ("fail", Verdict.OOS), ("does not conform", Verdict.OOS),
                                           ("cloudy", Verdict.FAIL)])
def test_pass_fail_criteria_accept_only_pass_or_fail_words(value, verdict):
    assert pass_fail_rule(BY_CODE["APPEARANCE"], txt(value)).verdict == verdict


def test_a_numeric_result_in_another_unit_fails_and_names_the_expected_unit():
    outcome = numeric_rule(BY_CODE["ENDOTOXIN"], num("0.1", "EU/kg"))
    assert outcome.verdict == Verdict.FAIL
    assert "EU/mL" in outcome.message


def test_a_text_value_for_a_numeric_criterion_fails():
    outcome = numeric_rule(BY_CODE["VIABILITY"], txt("high"))
    assert outcome.verdict == Verdict.FAIL


def test_a_lot_meeting_every_rule_is_releasable():
    evaluation = evaluate_release(DEFAULT_CRITERIA, good_facts())
    assert [o for o in evaluation.outcomes if o.verdict != Verdict.PASS] == []
    assert evaluation.disposition == Disposition.RELEASABLE
    assert len(evaluation.outcomes) == 6 + len(DEFAULT_CRITERIA)


def test_every_failure_is_reported_not_only_the_first():
    results = passing_results()
    results["VIABILITY"] = num("70", "%")
    results["CD34"] = num("3", "%")
    del results["KARYOTYPE"]
    facts = good_facts(donor_eligible=False, open_deviation_count=2, max_passage=6, results=results)
    evaluation = evaluate_release(DEFAULT_CRITERIA, facts)
    failing = {o.code: o.verdict for o in evaluation.failures}
    assert failing == {"DONOR": Verdict.FAIL, "DEVIATIONS": Verdict.FAIL, "PASSAGE": Verdict.FAIL,
                       "VIABILITY": Verdict.OOS, "CD34": Verdict.OOS, "KARYOTYPE": Verdict.FAIL}
    assert evaluation.disposition == Disposition.NOT_RELEASABLE
    messages = {o.code: o.message for o in evaluation.outcomes}
    assert "70 %" in messages["VIABILITY"] and "≥ 80 %" in messages["VIABILITY"]
    assert "2 deviation(s)" in messages["DEVIATIONS"]
    assert "P6" in messages["PASSAGE"] and "P5" in messages["PASSAGE"]


def test_pending_sterility_alone_allows_release_with_results_pending():
    results = passing_results()
    results["STERILITY"] = ResultFact(pending=True)
    evaluation = evaluate_release(DEFAULT_CRITERIA, good_facts(results=results))
    assert [o.code for o in evaluation.pending] == ["STERILITY"]
    assert evaluation.disposition == Disposition.RELEASABLE_PENDING


@pytest.mark.parametrize("changes,code", [
    ({"donor_eligible": None}, "DONOR"),
    ({"unverified_result_count": 1}, "VERIFIED"),
    ({"unverified_entry_count": 1}, "ENTRIES"),
    ({"potency": None}, "POTENCY_RUN"),
])
def test_pending_process_rules_block_release(changes, code):
    evaluation = evaluate_release(DEFAULT_CRITERIA, good_facts(**changes))
    assert code in [o.code for o in evaluation.pending]
    assert evaluation.disposition == Disposition.NOT_RELEASABLE


@pytest.mark.parametrize("max_passage,verdict", [(5, Verdict.PASS), (4, Verdict.PASS), (6, Verdict.FAIL),
                                                 (None, Verdict.FAIL)])
def test_passage_is_judged_against_the_limit(max_passage, verdict):
    evaluation = evaluate_release(DEFAULT_CRITERIA, good_facts(max_passage=max_passage))
    assert {o.code: o.verdict for o in evaluation.outcomes}["PASSAGE"] == verdict


def test_an_invalid_potency_run_fails_and_its_value_still_is_judged():
    facts = good_facts(potency=PotencyFact(D("10"), False, "PR-9"))
    outcomes = {o.code: o for o in evaluate_release(DEFAULT_CRITERIA, facts).outcomes}
    assert outcomes["POTENCY_RUN"].verdict == Verdict.FAIL and "PR-9" in outcomes["POTENCY_RUN"].message
    assert outcomes[POTENCY_TEST_CODE].verdict == Verdict.OOS


def test_without_a_potency_run_the_potency_criterion_has_no_result():
    outcomes = {o.code: o for o in evaluate_release(DEFAULT_CRITERIA, good_facts(potency=None)).outcomes}
    assert outcomes[POTENCY_TEST_CODE].verdict == Verdict.FAIL


def test_the_flow_panel_holds_the_eight_markers_of_the_specification():
    assert len(FLOW_PANEL) == 8 and all(code in BY_CODE for code in FLOW_PANEL)


def test_limit_text_prints_one_sided_and_two_sided_limits():
    assert BY_CODE["VIABILITY"].limit_text == "≥ 80 %"
    assert BY_CODE["ENDOTOXIN"].limit_text == "≤ 0.5 EU/mL"
    assert BY_CODE["VIABLE_CELLS"].limit_text == "8 – 12 x10^6 cells/vial"
    assert Criterion("X", "x", CriterionKind.TEXT, expected_text="normal").limit_text == "= normal"
