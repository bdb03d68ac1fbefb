"""Release rules: pure functions, no Flask and no database (DESIGN.md, "Release rules").

Every rule returns a ``RuleOutcome`` with a verdict (pass, fail, pending, or OOS for a result
outside its specification) and a message naming the value and the limit. ``evaluate_release``
evaluates every rule and never stops at the first failure: QA and the certificate of analysis
list each one. Messages are English msgids with named parameters so the interface translates
them at display time while stored values stay language-neutral."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Mapping


def N_(message: str) -> str:
    """Mark a message for extraction; translated where it is shown."""
    return message


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"
    OOS = "oos"  # a result outside its specification


class CriterionKind(str, enum.Enum):
    NUMERIC = "numeric"
    PASS_FAIL = "pass_fail"
    TEXT = "text"


PASS_WORDS = frozenset({"pass", "passes", "conforms", "complies"})
FAIL_WORDS = frozenset({"fail", "fails", "does not conform", "does_not_conform", "not conforming"})

# The BV2 potency criterion takes its value from the approved potency run, not from manual entry.
POTENCY_TEST_CODE = "BV2_POTENCY"


@dataclass(frozen=True)
class Criterion:
    """One line of a specification version."""

    test_code: str
    name: str
    kind: CriterionKind
    unit: str | None = None
    lower_limit: Decimal | None = None
    upper_limit: Decimal | None = None
    expected_text: str | None = None
    may_be_pending: bool = False
    method: str | None = None

    @property
    def limit_text(self) -> str:
        """The limit as printed: "≥ 80 %", "8 – 12 ×10^6 cells/vial", "= negative", "conforms"."""
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == CriterionKind.NUMERIC:
            if self.lower_limit is not None and self.upper_limit is not None:
                return f"{fmt(self.lower_limit)} – {fmt(self.upper_limit)}{unit}"
            if self.lower_limit is not None:
                return f"≥ {fmt(self.lower_limit)}{unit}"
            if self.upper_limit is not None:
                return f"≤ {fmt(self.upper_limit)}{unit}"
            return f"report{unit}"
        if self.kind == CriterionKind.TEXT:
            return f"= {self.expected_text}"
        return "pass"


@dataclass(frozen=True)
class ResultFact:
    """The current (latest, not superseded) result of one test. ``pending`` marks a test that
    was started but has no result yet (a 14-day sterility culture)."""

    numeric_value: Decimal | None = None
    text_value: str | None = None
    unit: str | None = None
    pending: bool = False


@dataclass(frozen=True)
class PotencyFact:
    percent_inhibition: Decimal | None
    run_valid: bool
    run_reference: str


@dataclass(frozen=True)
class BatchFacts:
    """A snapshot of everything the release rules look at."""

    donor_eligible: bool | None  # None: eligibility still pending
    open_deviation_count: int
    max_passage: int | None
    passage_limit: int
    unverified_result_count: int
    potency: PotencyFact | None
    results: Mapping[str, ResultFact] = field(default_factory=dict)
    unverified_entry_count: int = 0  # passage counts and the fill awaiting second-person verification


@dataclass(frozen=True)
class RuleOutcome:
    code: str
    name: str
    verdict: Verdict
    message_id: str
    params: Mapping[str, str] = field(default_factory=dict)
    limit: str = ""
    result: str = ""
    may_be_pending: bool = False

    @property
    def message(self) -> str:
        return self.message_id % dict(self.params)

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.PASS


def fmt(value: Decimal | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    normalized = value.normalize()
    if normalized.as_tuple().exponent < -4:  # a computed value (potency): show 4 decimals, judge exactly
        normalized = value.quantize(Decimal("0.0001")).normalize()
    return format(normalized, "f")


def to_decimal(text: object) -> Decimal | None:
    """Parse a number as typed by a person; None when it is not a finite number."""
    try:
        value = Decimal(str(text).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _norm(text: str | None) -> str:
    return " ".join((text or "").strip().lower().split())


def _outcome(criterion: Criterion, verdict: Verdict, message_id: str, result: str = "",
             **params: str) -> RuleOutcome:
    params = {"name": criterion.name, "limit": criterion.limit_text, "value": result, **params}
    return RuleOutcome(criterion.test_code, criterion.name, verdict, message_id, params,
                       criterion.limit_text, result, criterion.may_be_pending)


def _missing(criterion: Criterion, result: ResultFact | None) -> RuleOutcome | None:
    if result is not None and not result.pending:
        return None
    if criterion.may_be_pending:
        return _outcome(criterion, Verdict.PENDING,
                        N_("%(name)s: result pending (allowed to be pending at release); limit %(limit)s."),
                        "pending")
    if result is None:
        return _outcome(criterion, Verdict.FAIL, N_("%(name)s: no result recorded; limit %(limit)s."))
    return _outcome(criterion, Verdict.PENDING, N_("%(name)s: result pending; limit %(limit)s."), "pending")


def numeric_rule(criterion: Criterion, result: ResultFact | None) -> RuleOutcome:
    """A number with a unit inside its lower and/or upper limit (limits inclusive)."""
    missing = _missing(criterion, result)
    if missing:
        return missing
    assert result is not None
    if result.numeric_value is None:
        return _outcome(criterion, Verdict.FAIL, N_("%(name)s: the result is not a number; limit %(limit)s."),
                        result.text_value or "")
    shown = f"{fmt(result.numeric_value)}" + (f" {result.unit}" if result.unit else "")
    if (result.unit or "") != (criterion.unit or ""):
        return _outcome(criterion, Verdict.FAIL,
                        N_("%(name)s: %(value)s is in a different unit than the specification (%(unit)s)."),
                        shown, unit=criterion.unit or "—")
    value = result.numeric_value
    if criterion.lower_limit is not None and value < criterion.lower_limit:
        return _outcome(criterion, Verdict.OOS, N_("%(name)s: %(value)s is below the limit %(limit)s."), shown)
    if criterion.upper_limit is not None and value > criterion.upper_limit:
        return _outcome(criterion, Verdict.OOS, N_("%(name)s: %(value)s is above the limit %(limit)s."), shown)
    return _outcome(criterion, Verdict.PASS, N_("%(name)s: %(value)s meets %(limit)s."), shown)


def pass_fail_rule(criterion: Criterion, result: ResultFact | None) -> RuleOutcome:
    """A result recorded as pass (conforms) or fail."""
    missing = _missing(criterion, result)
    if missing:
        return missing
    assert result is not None
    word = _norm(result.text_value)
    if word in PASS_WORDS:
        return _outcome(criterion, Verdict.PASS, N_("%(name)s: %(value)s meets %(limit)s."), result.text_value or "")
    if word in FAIL_WORDS:
        return _outcome(criterion, Verdict.OOS, N_("%(name)s: %(value)s does not meet %(limit)s."),
                        result.text_value or "")
    return _outcome(criterion, Verdict.FAIL, N_("%(name)s: “%(value)s” is neither pass nor fail."),
                    result.text_value or "")


def text_rule(criterion: Criterion, result: ResultFact | None) -> RuleOutcome:
    """A text result that must equal the expected text (case and spacing ignored)."""
    missing = _missing(criterion, result)
    if missing:
        return missing
    assert result is not None
    if _norm(result.text_value) == _norm(criterion.expected_text):
        return _outcome(criterion, Verdict.PASS, N_("%(name)s: %(value)s meets %(limit)s."), result.text_value or "")
    return _outcome(criterion, Verdict.OOS, N_("%(name)s: “%(value)s” does not equal the expected “%(expected)s”."),
                    result.text_value or "", expected=criterion.expected_text or "")


CRITERION_RULES = {
    CriterionKind.NUMERIC: numeric_rule,
    CriterionKind.PASS_FAIL: pass_fail_rule,
    CriterionKind.TEXT: text_rule,
}


def _process(code: str, name: str, verdict: Verdict, message_id: str, limit: str, result: str,
             **params: str) -> RuleOutcome:
    return RuleOutcome(code, name, verdict, message_id, {"value": result, "limit": limit, **params},
                       limit, result)


def donor_eligible_rule(facts: BatchFacts) -> RuleOutcome:
    limit = "eligible"
    if facts.donor_eligible is None:
        return _process("DONOR", N_("Donor eligible"), Verdict.PENDING,
                        N_("Donor eligibility is still pending; required: %(limit)s."), limit, "pending")
    if facts.donor_eligible:
        return _process("DONOR", N_("Donor eligible"), Verdict.PASS, N_("Donor is %(value)s."), limit, "eligible")
    return _process("DONOR", N_("Donor eligible"), Verdict.FAIL,
                    N_("Donor is %(value)s; required: %(limit)s."), limit, "ineligible")


def deviations_closed_rule(facts: BatchFacts) -> RuleOutcome:
    verdict = Verdict.PASS if facts.open_deviation_count == 0 else Verdict.FAIL
    message = (N_("All deviations are closed.") if verdict == Verdict.PASS
               else N_("%(value)s deviation(s) still open; required: %(limit)s open."))
    return _process("DEVIATIONS", N_("All deviations closed"), verdict, message, "0",
                    str(facts.open_deviation_count))


def passage_within_limit_rule(facts: BatchFacts) -> RuleOutcome:
    limit = f"≤ P{facts.passage_limit}"
    if facts.max_passage is None:
        return _process("PASSAGE", N_("Passage within limit"), Verdict.FAIL,
                        N_("No passage is recorded; limit %(limit)s."), limit, "—")
    shown = f"P{facts.max_passage}"
    if facts.max_passage > facts.passage_limit:
        return _process("PASSAGE", N_("Passage within limit"), Verdict.FAIL,
                        N_("Highest passage %(value)s exceeds the limit %(limit)s."), limit, shown)
    return _process("PASSAGE", N_("Passage within limit"), Verdict.PASS,
                    N_("Highest passage %(value)s is within %(limit)s."), limit, shown)


def results_verified_rule(facts: BatchFacts) -> RuleOutcome:
    if facts.unverified_result_count:
        return _process("VERIFIED", N_("All results verified"), Verdict.PENDING,
                        N_("%(value)s result(s) await second-person verification."), "0",
                        str(facts.unverified_result_count))
    return _process("VERIFIED", N_("All results verified"), Verdict.PASS,
                    N_("Every manually entered result is verified."), "0", "0")


def entries_verified_rule(facts: BatchFacts) -> RuleOutcome:
    """The batch record's critical entries (passage counts, the fill) are second-person verified."""
    if facts.unverified_entry_count:
        return _process("ENTRIES", N_("Batch record entries verified"), Verdict.PENDING,
                        N_("%(value)s batch record entry(ies) (passage counts, fill) await second-person verification."),
                        "0", str(facts.unverified_entry_count))
    return _process("ENTRIES", N_("Batch record entries verified"), Verdict.PASS,
                    N_("Every passage count and the fill are verified by a second person."), "0", "0")


def potency_run_rule(facts: BatchFacts) -> RuleOutcome:
    name = N_("Approved potency run present and valid")
    if facts.potency is None:
        return _process("POTENCY_RUN", name, Verdict.PENDING, N_("No approved potency run for this lot."),
                        "approved, valid", "—")
    if not facts.potency.run_valid:
        return _process("POTENCY_RUN", name, Verdict.FAIL, N_("Potency run %(value)s is not valid."),
                        "approved, valid", facts.potency.run_reference)
    return _process("POTENCY_RUN", name, Verdict.PASS, N_("Potency run %(value)s is approved and valid."),
                    "approved, valid", facts.potency.run_reference)


PROCESS_RULES = (donor_eligible_rule, deviations_closed_rule, passage_within_limit_rule,
                 entries_verified_rule, results_verified_rule, potency_run_rule)


def result_for(criterion: Criterion, facts: BatchFacts) -> ResultFact | None:
    result = facts.results.get(criterion.test_code)
    if result is None and criterion.test_code == POTENCY_TEST_CODE and facts.potency is not None \
            and facts.potency.percent_inhibition is not None:
        return ResultFact(numeric_value=facts.potency.percent_inhibition, unit=criterion.unit)
    return result


class Disposition(str, enum.Enum):
    RELEASABLE = "releasable"
    RELEASABLE_PENDING = "releasable_pending"  # only may-be-pending criteria are pending
    NOT_RELEASABLE = "not_releasable"


@dataclass(frozen=True)
class Evaluation:
    outcomes: tuple[RuleOutcome, ...]

    @property
    def failures(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.verdict in (Verdict.FAIL, Verdict.OOS)]

    @property
    def pending(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.verdict == Verdict.PENDING]

    @property
    def disposition(self) -> Disposition:
        if self.failures or any(not o.may_be_pending for o in self.pending):
            return Disposition.NOT_RELEASABLE
        if self.pending:
            return Disposition.RELEASABLE_PENDING
        return Disposition.RELEASABLE


def evaluate_release(criteria: list[Criterion] | tuple[Criterion, ...], facts: BatchFacts) -> Evaluation:
    """Evaluate every process rule and every criterion of the specification version; never
    stop at the first failure."""
    outcomes = [rule(facts) for rule in PROCESS_RULES]
    for criterion in criteria:
        outcomes.append(CRITERION_RULES[CriterionKind(criterion.kind)](criterion, result_for(criterion, facts)))
    return Evaluation(tuple(outcomes))
