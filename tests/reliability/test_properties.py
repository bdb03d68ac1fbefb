"""Property-based tests of the pure rules: the QR codec, the ISBT 128 check character, the dose
and endotoxin arithmetic, the release rules and the dispensing checks. No database, no Flask app:
each property is checked against generated input and, where it helps, an independent oracle."""
from __future__ import annotations

import dataclasses
import datetime as dt
import string
from decimal import Decimal
from fractions import Fraction

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from labsys.chain_of_custody.rules import (DispenseSettings, ScannedPatient, ScannedVial, all_passed,
                                           dispensing_checks, vial_checks)
from labsys.documents import isbt
from labsys.documents.codec import KINDS, Keyring, Verdict
from labsys.release.rules import (PROCESS_RULES, BatchFacts, Criterion, CriterionKind, PotencyFact,
                                  ResultFact, evaluate_release, numeric_rule)
from labsys.release.rules import Verdict as ReleaseVerdict
from labsys.trial.rules import (check_dose, check_endotoxin, endotoxin_eu_per_kg, target_cells,
                                viable_cells_after_thaw, vials_needed)

# One key for the whole module, as tests/documents/test_codec.py does: a Keyring built from a
# freshly generated Ed25519 key, no app and no key file.
KEYRING = Keyring(Ed25519PrivateKey.generate())

identifiers = st.one_of(
    st.from_regex(r"[0-9A-Z][0-9A-Z-]{0,39}", fullmatch=True),
    st.builds(lambda first, rest: first + rest, st.sampled_from(string.digits + string.ascii_uppercase),
              st.text(alphabet=string.digits + string.ascii_uppercase + "-", min_size=39, max_size=39)))
BASE32 = string.ascii_uppercase + "234567"
kinds = st.sampled_from(sorted(KINDS))


# --- QR codec -------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.text(alphabet=string.ascii_uppercase + string.digits + ".-=", max_size=220).map(lambda t: "LS1." + t),
                 st.integers(), st.none(), st.lists(st.integers(), max_size=3)))
def test_verify_returns_an_invalid_verdict_for_any_random_input_and_never_raises(payload):
    verdict = KEYRING.verify(payload)
    assert isinstance(verdict, Verdict)
    assert verdict.valid is False
    assert verdict.reason


@settings(max_examples=300, deadline=None)
@given(kinds, identifiers, st.data())
def test_any_single_character_substitution_of_a_valid_payload_is_invalid(kind, identifier, data):
    payload = KEYRING.encode(kind, identifier)
    assert KEYRING.verify(payload).valid
    # Some draws aim at the signature's last character, whose spare bits a lax base32 decoder
    # would ignore, and use base32 letters, the other case or a space as replacement.
    position = data.draw(st.one_of(st.integers(0, len(payload) - 1), st.just(len(payload) - 1)),
                         label="position")
    original = payload[position]
    replacement = data.draw(st.sampled_from([c for c in string.printable if c != original]) |
                            st.sampled_from([c for c in BASE32 if c != original]) |
                            st.sampled_from([c for c in (original.swapcase(), " ") if c != original]),
                            label="replacement")
    altered = payload[:position] + replacement + payload[position + 1:]
    verdict = KEYRING.verify(altered)
    assert verdict.valid is False, (altered, verdict)


@settings(max_examples=200, deadline=None)
@given(kinds, identifiers)
def test_encoding_then_verifying_returns_the_same_kind_and_identifier(kind, identifier):
    payload = KEYRING.encode(kind, identifier)
    verdict = KEYRING.verify(payload)
    assert verdict.valid and verdict.reason == "signature holds"
    assert (verdict.kind, verdict.identifier, verdict.key_id) == (kind, identifier, KEYRING.key_id)
    public_only = Keyring(public_keys=[KEYRING.private_key.public_key()])
    assert public_only.verify(payload) == verdict


# --- ISBT 128 check character ---------------------------------------------------------------------

MOD37_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"


def reference_mod37_2(text: str) -> str:
    """ISO/IEC 7064 Mod 37-2, written independently of labsys.documents.isbt."""
    values = {c: i for i, c in enumerate(string.digits)}
    values.update({c: 10 + i for i, c in enumerate(string.ascii_uppercase)})
    values["*"] = 36
    p = 0
    for character in text:
        p = ((p + values[character]) * 2) % 37
    check = (38 - p) % 37
    return (string.digits + string.ascii_uppercase + "*")[check]


facility_codes = st.builds(lambda first, rest: first + rest,
                           st.sampled_from("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"),
                           st.text(alphabet=string.digits, min_size=4, max_size=4))
dins = st.builds(isbt.donation_identifier, facility_codes, st.integers(0, 99), st.integers(1, 999_999))


@settings(max_examples=500, deadline=None)
@given(dins)
def test_the_din_check_character_equals_an_independent_mod_37_2(din):
    assert len(din) == 13 and isbt.DIN_PATTERN.match(din)
    check = isbt.mod37_2_check(din)
    assert check == reference_mod37_2(din)
    assert isbt.mod37_2_valid(din + check)


@settings(max_examples=500, deadline=None)
@given(dins, st.data())
def test_any_single_substitution_in_a_din_changes_its_check_character(din, data):
    position = data.draw(st.integers(0, len(din) - 1), label="position")
    replacement = data.draw(st.sampled_from([c for c in MOD37_ALPHABET if c != din[position]]),
                            label="replacement")
    altered = din[:position] + replacement + din[position + 1:]
    assert isbt.mod37_2_check(altered) != isbt.mod37_2_check(din)
    assert not isbt.mod37_2_valid(altered + isbt.mod37_2_check(din))


# --- Dose and endotoxin ---------------------------------------------------------------------------

weights = st.decimals(min_value=Decimal("30"), max_value=Decimal("300"), places=1)
viabilities = st.one_of(st.none(), st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1"), places=2))
tolerances = st.decimals(min_value=Decimal("0"), max_value=Decimal("0.5"), places=2)


@settings(max_examples=500, deadline=None)
@given(st.integers(100_000, 100_000_000), weights, st.integers(1, 10**10), viabilities)
def test_vials_needed_is_the_smallest_count_that_reaches_the_target(dose_per_kg, weight, cells_per_vial, viability):
    target = target_cells(dose_per_kg, weight)
    assert abs(Fraction(target) - Fraction(dose_per_kg) * Fraction(weight)) <= Fraction(1, 2)
    per_vial = viable_cells_after_thaw(cells_per_vial, viability)
    assume(per_vial > 0)  # zero cells after thaw: vials_needed divides by zero (not a real vial)
    n = vials_needed(target, cells_per_vial, viability)
    assert n * per_vial >= target
    assert (n - 1) * per_vial < target


@st.composite
def dose_cases(draw):
    target = draw(st.integers(1, 10**11))
    tolerance = draw(tolerances)
    near = [int(Fraction(target) * (1 - Fraction(tolerance))), int(Fraction(target) * (1 + Fraction(tolerance)))]
    delivered = draw(st.one_of(st.integers(0, 2 * target),
                               st.sampled_from(near).flatmap(lambda d: st.integers(max(0, d - 2), d + 2))))
    return target, delivered, tolerance


@settings(max_examples=500, deadline=None)
@given(dose_cases(), st.one_of(st.none(), st.integers(0, 3 * 10**11)))
def test_check_dose_passes_exactly_when_the_delivered_fraction_is_within_tolerance(case, max_cells):
    target, delivered, tolerance = case
    dose = check_dose(target, delivered, tolerance, max_cells)
    ratio = Fraction(delivered, target)
    within = 1 - Fraction(tolerance) <= ratio <= 1 + Fraction(tolerance)
    under_cap = max_cells is None or delivered <= max_cells
    event("dose within tolerance" if within else "dose outside tolerance")
    assert dose.passed == (within and under_cap)
    assert {r.name: r.passed for r in dose.results}["dose_tolerance"] == within
    assert len(dose.reasons) == (not within) + (not under_cap)


eu_values = st.decimals(min_value=Decimal("0"), max_value=Decimal("100"), places=4)


@settings(max_examples=500, deadline=None)
@given(st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=3),
       st.decimals(min_value=Decimal("0"), max_value=Decimal("500"), places=2), weights,
       eu_values, st.decimals(min_value=Decimal("0.1"), max_value=Decimal("20"), places=2))
def test_the_endotoxin_check_fails_exactly_when_the_dose_per_kg_exceeds_the_limit(
        eu_per_ml, volume, weight, direct_value, limit):
    per_kg = endotoxin_eu_per_kg(eu_per_ml, volume, weight)
    assert abs(Fraction(per_kg) - Fraction(eu_per_ml) * Fraction(volume) / Fraction(weight)) <= Fraction(1, 20_000)
    for value in (per_kg, direct_value, limit):  # the limit itself passes: the bound is inclusive
        result = check_endotoxin(value, limit)
        assert result.passed == (not value > limit), (value, limit)
        assert result.message


# --- Release rules --------------------------------------------------------------------------------

limits = st.one_of(st.none(), st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1000"), places=3))
units = st.sampled_from([None, "%", "EU/mL", "×10^6 cells/vial"])


@st.composite
def numeric_cases(draw):
    lower, upper = draw(limits), draw(limits)
    candidates = [v for v in (lower, upper) if v is not None]
    value = draw(st.one_of(
        st.decimals(min_value=Decimal("-2000"), max_value=Decimal("2000"), places=4),
        st.sampled_from(candidates or [Decimal(0)]).flatmap(
            lambda edge: st.sampled_from([edge, edge - Decimal("0.001"), edge + Decimal("0.001")]))))
    return lower, upper, value


@settings(max_examples=500, deadline=None)
@given(numeric_cases(), units)
def test_a_numeric_criterion_passes_exactly_when_the_value_is_within_its_inclusive_limits(case, unit):
    lower, upper, value = case
    criterion = Criterion("CODE", "Some test", CriterionKind.NUMERIC, unit=unit, lower_limit=lower, upper_limit=upper)
    outcome = numeric_rule(criterion, ResultFact(numeric_value=value, unit=unit))
    inside = (lower is None or value >= lower) and (upper is None or value <= upper)
    event("value within limits" if inside else "value outside limits")
    if inside:
        assert outcome.verdict == ReleaseVerdict.PASS, (lower, upper, value, outcome)
    else:
        assert outcome.verdict in (ReleaseVerdict.FAIL, ReleaseVerdict.OOS), (lower, upper, value, outcome)
    assert outcome.passed == inside
    assert outcome.message


test_codes = st.sampled_from(["CELL_COUNT", "VIABILITY", "STERILITY", "IDENTITY", "ENDOTOXIN", "BV2_POTENCY"])
short_text = st.text(max_size=20)


@st.composite
def criteria(draw):
    kind = draw(st.sampled_from(list(CriterionKind)))
    return Criterion(draw(test_codes), draw(short_text.filter(bool)), kind, unit=draw(units),
                     lower_limit=draw(limits), upper_limit=draw(limits),
                     expected_text=draw(st.one_of(st.none(), short_text)),
                     may_be_pending=draw(st.booleans()))


result_facts = st.builds(ResultFact,
                         numeric_value=st.one_of(st.none(), st.decimals(min_value=Decimal("-2000"),
                                                                        max_value=Decimal("2000"), places=3)),
                         text_value=st.one_of(st.none(), st.sampled_from(["pass", "Conforms", "fail", "negative"]),
                                              short_text),
                         unit=units, pending=st.booleans())

batch_facts = st.builds(
    BatchFacts,
    donor_eligible=st.one_of(st.none(), st.booleans()),
    open_deviation_count=st.integers(0, 5),
    max_passage=st.one_of(st.none(), st.integers(0, 12)),
    passage_limit=st.integers(1, 10),
    unverified_result_count=st.integers(0, 5),
    potency=st.one_of(st.none(), st.builds(PotencyFact,
                                           percent_inhibition=st.one_of(st.none(), st.decimals(
                                               min_value=Decimal("0"), max_value=Decimal("100"), places=6)),
                                           run_valid=st.booleans(), run_reference=short_text)),
    results=st.dictionaries(test_codes, result_facts, max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(criteria(), max_size=8), batch_facts)
def test_every_rule_is_evaluated_and_the_disposition_follows_the_outcomes(criteria_list, facts):
    evaluation = evaluate_release(criteria_list, facts)
    assert len(evaluation.outcomes) == len(criteria_list) + len(PROCESS_RULES)
    assert all(isinstance(o.verdict, ReleaseVerdict) and isinstance(o.message, str) for o in evaluation.outcomes)
    criterion_outcomes = evaluation.outcomes[len(PROCESS_RULES):]
    assert [o.code for o in criterion_outcomes] == [c.test_code for c in criteria_list]
    if evaluation.disposition == "releasable":
        assert all(o.passed for o in evaluation.outcomes)
    if any(o.verdict in (ReleaseVerdict.FAIL, ReleaseVerdict.OOS) for o in evaluation.outcomes):
        assert evaluation.disposition == "not_releasable"


# --- Dispensing checks ----------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.timezone.utc)
KITS = ["K-123456", "K-654321", None]
VIAL_STATES = ["available", "allocated", "thawed", "dispensed", "administered", "quarantine", "destroyed", None]
LOT_STATES = ["released", "released_pending", "quarantine", "rejected", None]
minutes = st.integers(-180, 180).map(lambda m: dt.timedelta(minutes=m))

patients = st.builds(ScannedPatient, signature_valid=st.booleans(), signature_reason=st.one_of(st.none(), short_text),
                     found=st.booleans(), study_id=st.sampled_from(["S-001", "S-007"]),
                     kit_number=st.sampled_from(KITS), randomized=st.booleans(),
                     arm=st.sampled_from(["msc", "control", None]), weight_kg=st.one_of(st.none(), weights))

vials = st.builds(ScannedVial, payload=st.just("LS1.VIAL.X"), signature_valid=st.booleans(),
                  signature_reason=st.one_of(st.none(), short_text), found=st.booleans(),
                  identifier=st.sampled_from(["W000026000123A001", "W000026000123A002", "W000026000123A003", None]),
                  status=st.sampled_from(VIAL_STATES), allocated_kit=st.sampled_from(KITS),
                  lot_identifier=st.sampled_from(["W000026000123", None]), lot_status=st.sampled_from(LOT_STATES),
                  lot_selected=st.booleans(),
                  expires_at=st.one_of(st.none(), minutes.map(lambda d: NOW + d)),
                  thawed_at=st.one_of(st.none(), minutes.map(lambda d: NOW - d)),
                  viable_cells=st.one_of(st.none(), st.integers(0, 10**8)),
                  volume_ml=st.one_of(st.none(), st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=1)),
                  endotoxin_eu_per_ml=st.one_of(st.none(), st.decimals(min_value=Decimal("0"), max_value=Decimal("20"),
                                                                       places=2)))

dispense_settings = st.builds(DispenseSettings, dose_cells_per_kg=st.integers(100_000, 2_000_000),
                              dose_tolerance=tolerances, max_cells=st.one_of(st.none(), st.integers(10**6, 10**9)),
                              hold_minutes=st.integers(0, 120),
                              endotoxin_limit_eu_per_kg=st.decimals(min_value=Decimal("0.5"), max_value=Decimal("10"),
                                                                    places=1),
                              post_thaw_viability=viabilities)


def _good_vial(identifier: str) -> ScannedVial:
    return ScannedVial(payload="LS1.VIAL." + identifier, signature_valid=True, found=True, identifier=identifier,
                       status="thawed", allocated_kit="K-123456", lot_identifier="W000026000123",
                       lot_status="released", lot_selected=True, expires_at=NOW + dt.timedelta(days=300),
                       thawed_at=NOW - dt.timedelta(minutes=20), viable_cells=35_000_000,
                       volume_ml=Decimal("10"), endotoxin_eu_per_ml=Decimal("0.5"))


GOOD_PATIENT = ScannedPatient(signature_valid=True, found=True, study_id="S-007", kit_number="K-123456",
                              randomized=True, arm="msc", weight_kg=Decimal("70"))
GOOD_VIALS = [_good_vial("W000026000123A001"), _good_vial("W000026000123A002")]
GOOD_SETTINGS = DispenseSettings(dose_cells_per_kg=1_000_000, dose_tolerance=Decimal("0.20"), hold_minutes=60)


def _vary_vial(index: int, **changes) -> tuple:
    varied = list(GOOD_VIALS)
    varied[index] = dataclasses.replace(varied[index], **changes)
    return GOOD_PATIENT, varied, GOOD_SETTINGS


vial_index = st.integers(0, len(GOOD_VIALS) - 1)
# The good dispensing with exactly one fact varied, often across its limit, so that both outcomes
# occur and each limit is met on its own.
one_fact_varied = st.one_of(
    st.sampled_from(["msc", "control", None]).map(
        lambda arm: (dataclasses.replace(GOOD_PATIENT, arm=arm), GOOD_VIALS, GOOD_SETTINGS)),
    st.builds(lambda i, status: _vary_vial(i, status=status), vial_index, st.sampled_from(VIAL_STATES)),
    st.builds(lambda i, m: _vary_vial(i, thawed_at=NOW - dt.timedelta(minutes=m)), vial_index, st.integers(-5, 70)),
    st.builds(lambda i, m: _vary_vial(i, expires_at=NOW + dt.timedelta(minutes=m)), vial_index, st.integers(-5, 5)),
    st.builds(lambda i, kit: _vary_vial(i, allocated_kit=kit), vial_index, st.sampled_from(KITS)),
    st.builds(lambda i, lot: _vary_vial(i, lot_status=lot), vial_index, st.sampled_from(LOT_STATES)),
    st.builds(lambda i, chosen: _vary_vial(i, lot_selected=chosen), vial_index, st.booleans()),
    st.builds(lambda i, ident: _vary_vial(i, identifier=ident), vial_index,
              st.sampled_from([v.identifier for v in GOOD_VIALS])),
    st.builds(lambda i, cells: _vary_vial(i, viable_cells=cells), vial_index, st.integers(20_000_000, 60_000_000)),
    st.builds(lambda i, eu: _vary_vial(i, endotoxin_eu_per_ml=eu), vial_index,
              st.decimals(min_value=Decimal("0"), max_value=Decimal("40"), places=2)),
)
random_scenarios = st.tuples(patients, st.lists(vials, max_size=4), dispense_settings)


@settings(max_examples=300, deadline=None)
@given(st.one_of(random_scenarios, one_fact_varied))
@example((GOOD_PATIENT, GOOD_VIALS, GOOD_SETTINGS))
def test_all_passed_only_when_every_check_passed_and_every_fact_allows_dispensing(scenario):
    patient, vial_list, dispense = scenario
    checks = dispensing_checks(patient, vial_list, dispense, NOW)
    assert all(c.message for c in checks)
    assert all_passed(checks) == (bool(checks) and all(c.passed for c in checks))
    event("dispensing allowed" if all_passed(checks) else "dispensing refused")
    if not all_passed(checks):
        return
    # Every fact, read independently of the rule code, must allow the dispensing.
    assert patient.signature_valid and patient.found and patient.randomized and patient.arm == "msc"
    assert patient.weight_kg is not None and vial_list
    identifiers_seen = [v.identifier for v in vial_list]
    assert len(set(identifiers_seen)) == len(identifiers_seen)
    for v in vial_list:
        assert v.signature_valid and v.found
        assert v.status in ("available", "allocated", "thawed")
        if v.status in ("allocated", "thawed"):
            assert v.allocated_kit == patient.kit_number and patient.kit_number is not None
        assert v.lot_status in ("released", "released_pending") and v.lot_selected
        assert v.expires_at is None or NOW < v.expires_at
        assert v.thawed_at is not None and dt.timedelta(0) <= NOW - v.thawed_at <= dt.timedelta(minutes=dispense.hold_minutes)


@settings(max_examples=300, deadline=None)
@given(vials, st.lists(vials, max_size=3), st.one_of(patients, st.just(GOOD_PATIENT)),
       st.one_of(dispense_settings, st.just(GOOD_SETTINGS)), st.sampled_from(["dispensed", "administered"]))
def test_a_dispensed_vial_never_passes_the_not_already_dispensed_check(vial, others, patient, dispense, status):
    dispensed = dataclasses.replace(vial, signature_valid=True, found=True, status=status)
    own = vial_checks(dispensed, patient, dispense, NOW, set())
    verdicts = [c.passed for c in own if c.rule == "vial_not_already_dispensed"]
    assert verdicts == [False]
    checks = dispensing_checks(patient, [*others, dispensed, *GOOD_VIALS], dispense, NOW)
    assert any(c.rule == "vial_not_already_dispensed" and not c.passed for c in checks)
    assert not all_passed(checks)
