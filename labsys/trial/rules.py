"""Pure trial rules: eligibility, permuted-block randomization, dose and endotoxin.

No Flask app, no database: each function takes plain values and returns plain values, so the
rules are tested in microseconds and read as the specification. Messages go through gettext
(which returns the English text when no request is active)."""
from __future__ import annotations

import datetime as dt
import random
import secrets
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Sequence

from labsys.i18n import gettext as _

# Plausible adult body weight: outside this a typing error is far likelier than a patient.
WEIGHT_MIN_KG = Decimal("30")
WEIGHT_MAX_KG = Decimal("300")
ENDOTOXIN_LIMIT_EU_PER_KG = Decimal("5")  # USP <85>: K = 5 EU/kg for a non-intrathecal IV dose
DEFAULT_DOSE_TOLERANCE = Decimal("0.20")

ARM_CONTROL = "control"
ARM_MSC = "msc"
ARMS = (ARM_CONTROL, ARM_MSC)


@dataclass(frozen=True)
class RuleResult:
    """One named rule's outcome, so every failure can be listed at once."""

    name: str
    passed: bool
    message: str
    pending: bool = False  # not yet assessed (neither passed nor failed)


def failures(results: Sequence[RuleResult]) -> list[RuleResult]:
    return [r for r in results if not r.passed and not r.pending]


# --- Eligibility ------------------------------------------------------------------------------

def age_on(year_of_birth: int, on: dt.date) -> int:
    """Age in completed years when only the year of birth is known (coded, no birth date):
    the age reached during that calendar year, the convention for year-only records."""
    return on.year - year_of_birth


@dataclass(frozen=True)
class EligibilityCriteria:
    age_min: int = 18
    age_max: int = 75
    exclusions: tuple[str, ...] = ()


@dataclass
class ScreeningAnswers:
    """What the investigator records at screening. ``None`` means not yet assessed."""

    age_years: int | None
    consent_date: dt.date | None
    diagnosis_severe_viral_pneumonia: bool | None
    exclusions_present: dict[str, bool | None] = field(default_factory=dict)
    weight_kg: Decimal | None = None
    screening_date: dt.date | None = None


def check_weight(weight_kg: Decimal | float | int | None) -> RuleResult:
    if weight_kg is None:
        return RuleResult("weight", False, _("Body weight is not recorded."), pending=True)
    weight = Decimal(str(weight_kg))
    if weight < WEIGHT_MIN_KG or weight > WEIGHT_MAX_KG:
        return RuleResult("weight", False, _(
            "Body weight %(w)s kg is outside the plausible range %(lo)s–%(hi)s kg; check the entry.",
            w=weight, lo=WEIGHT_MIN_KG, hi=WEIGHT_MAX_KG))
    return RuleResult("weight", True, _("Body weight %(w)s kg recorded.", w=weight))


def check_eligibility(answers: ScreeningAnswers, criteria: EligibilityCriteria) -> list[RuleResult]:
    """Evaluate every criterion; the patient is eligible when all pass and none is pending."""
    results: list[RuleResult] = []
    if answers.age_years is None:
        results.append(RuleResult("age", False, _("Age is not recorded."), pending=True))
    elif not criteria.age_min <= answers.age_years <= criteria.age_max:
        results.append(RuleResult("age", False, _(
            "Age %(age)d is outside the trial's range %(lo)d–%(hi)d years.",
            age=answers.age_years, lo=criteria.age_min, hi=criteria.age_max)))
    else:
        results.append(RuleResult("age", True, _("Age %(age)d is within %(lo)d–%(hi)d years.",
                                                   age=answers.age_years, lo=criteria.age_min,
                                                   hi=criteria.age_max)))
    if answers.consent_date is None:
        results.append(RuleResult("consent", False, _("Written informed consent is not recorded."),
                                  pending=True))
    elif answers.screening_date and answers.consent_date > answers.screening_date:
        results.append(RuleResult("consent", False, _("The consent date is in the future.")))
    else:
        results.append(RuleResult("consent", True, _("Consent signed on %(d)s.",
                                                       d=answers.consent_date.isoformat())))
    diagnosis = answers.diagnosis_severe_viral_pneumonia
    if diagnosis is None:
        results.append(RuleResult("diagnosis", False, _("The diagnosis is not yet confirmed."),
                                  pending=True))
    elif not diagnosis:
        results.append(RuleResult("diagnosis", False,
                                  _("The diagnosis is not severe viral pneumonia.")))
    else:
        results.append(RuleResult("diagnosis", True, _("Severe viral pneumonia confirmed.")))
    results.append(check_weight(answers.weight_kg))
    for item in criteria.exclusions:
        present = answers.exclusions_present.get(item)
        name = f"exclusion:{item}"
        if present is None:
            results.append(RuleResult(name, False, _("Exclusion not yet assessed: %(item)s", item=item),
                                      pending=True))
        elif present:
            results.append(RuleResult(name, False, _("Exclusion criterion present: %(item)s", item=item)))
        else:
            results.append(RuleResult(name, True, _("Exclusion absent: %(item)s", item=item)))
    return results


def eligibility_status(results: Sequence[RuleResult]) -> str:
    """``ineligible`` if any criterion fails, ``pending`` if any is unassessed, else ``eligible``."""
    if failures(results):
        return "ineligible"
    if any(r.pending for r in results):
        return "pending"
    return "eligible"


# --- Permuted-block randomization ---------------------------------------------------------------

@dataclass(frozen=True)
class PlannedAllocation:
    sequence: int  # 1-based position in the list
    block_number: int
    block_size: int
    arm: str


def generate_block_list(size: int, block_sizes: Sequence[int] = (2, 4),
                        ratio: tuple[int, int] = (1, 1), arms: tuple[str, str] = ARMS,
                        rng: random.Random | None = None) -> list[PlannedAllocation]:
    """A concealed allocation list in permuted blocks of randomly chosen size.

    Each block holds the arms in the given ratio (a block of 4 at 1:1 holds two of each) in a
    random order; the block size is drawn at random from ``block_sizes`` so the next allocation
    cannot be guessed at the end of a block. Blocks are whole, so the list may run a little past
    ``size``. ``rng`` defaults to the operating system's cryptographic source; tests pass a
    seeded ``random.Random`` to get a repeatable list."""
    if size < 1:
        raise ValueError(_("The list needs at least one allocation."))
    unit = sum(ratio)
    if any(r < 1 for r in ratio):
        raise ValueError(_("Each arm's ratio must be at least 1."))
    bad = [b for b in block_sizes if b < unit or b % unit]
    if not block_sizes or bad:
        raise ValueError(_("Block sizes must be multiples of %(unit)d (the ratio's sum).", unit=unit))
    rng = rng or secrets.SystemRandom()
    entries: list[PlannedAllocation] = []
    block_number = 0
    while len(entries) < size:
        block_number += 1
        block_size = rng.choice(list(block_sizes))
        per_unit = block_size // unit
        block = [arms[0]] * (ratio[0] * per_unit) + [arms[1]] * (ratio[1] * per_unit)
        rng.shuffle(block)
        for arm in block:
            entries.append(PlannedAllocation(len(entries) + 1, block_number, block_size, arm))
    return entries


def parse_block_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.replace(" ", "").split(",") if part}))
    except ValueError:
        raise ValueError(_("Block sizes are whole numbers separated by commas, e.g. 2,4."))
    if not sizes:
        raise ValueError(_("Give at least one block size."))
    return sizes


def parse_visit_days(text: str, follow_up_days: int) -> tuple[int, ...]:
    try:
        days = tuple(sorted({int(part) for part in text.replace(" ", "").split(",") if part}))
    except ValueError:
        raise ValueError(_("Visit days are whole numbers separated by commas, e.g. 1,7,14,28,90."))
    if not days or days[0] != 1:
        raise ValueError(_("The schedule starts with day 1 (the infusion day)."))
    if days[-1] > follow_up_days:
        raise ValueError(_("A visit falls after the end of follow-up (day %(d)d).", d=follow_up_days))
    return days


# --- Dose -----------------------------------------------------------------------------------------

def target_cells(dose_cells_per_kg: int, weight_kg: Decimal | float | int) -> int:
    """Viable cells to give: dose per kg × body weight (rounded to the nearest cell)."""
    weight = Decimal(str(weight_kg))
    if weight <= 0:
        raise ValueError(_("Body weight must be positive."))
    if dose_cells_per_kg <= 0:
        raise ValueError(_("The dose per kg must be positive."))
    return int((Decimal(dose_cells_per_kg) * weight).to_integral_value(rounding=ROUND_HALF_UP))


def viable_cells_after_thaw(viable_cells_per_vial: int,
                            post_thaw_viability: Decimal | float | None = None) -> int:
    """Viable cells a vial gives after thawing; without a post-thaw viability, the labelled count."""
    if viable_cells_per_vial <= 0:
        raise ValueError(_("Viable cells per vial must be positive."))
    if post_thaw_viability is None:
        return viable_cells_per_vial
    viability = Decimal(str(post_thaw_viability))
    if not Decimal(0) < viability <= Decimal(1):
        raise ValueError(_("Post-thaw viability is a fraction between 0 and 1."))
    return int((Decimal(viable_cells_per_vial) * viability).to_integral_value(rounding=ROUND_HALF_UP))


def vials_needed(target: int, viable_cells_per_vial: int,
                 post_thaw_viability: Decimal | float | None = None) -> int:
    """``ceil(target ÷ viable cells per vial)``, post-thaw viability applied when given."""
    per_vial = viable_cells_after_thaw(viable_cells_per_vial, post_thaw_viability)
    if per_vial <= 0:
        raise ValueError(_("A vial gives no viable cells after thaw."))
    return -(-target // per_vial)  # integer ceiling: exact at any size


@dataclass(frozen=True)
class DoseCheck:
    target_cells: int
    delivered_cells: int
    ratio: Decimal  # delivered ÷ target, e.g. 1.05
    results: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return not failures(self.results)

    @property
    def reasons(self) -> list[str]:
        return [r.message for r in failures(self.results)]


def check_dose(target: int, delivered: int, tolerance: Decimal | float = DEFAULT_DOSE_TOLERANCE,
               max_cells: int | None = None) -> DoseCheck:
    """Compare the dose actually delivered with the target: within ±tolerance and under the cap."""
    if target <= 0:
        raise ValueError(_("The target dose must be positive."))
    tolerance = Decimal(str(tolerance))
    ratio = (Decimal(delivered) / Decimal(target)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    low, high = Decimal(1) - tolerance, Decimal(1) + tolerance
    results = []
    if low <= Decimal(delivered) / Decimal(target) <= high:
        results.append(RuleResult("dose_tolerance", True, _(
            "Delivered dose is %(pct)s %% of target (allowed %(lo)s–%(hi)s %%).",
            pct=_percent(ratio), lo=_percent(low), hi=_percent(high))))
    else:
        results.append(RuleResult("dose_tolerance", False, _(
            "Delivered dose is %(pct)s %% of target, outside the allowed %(lo)s–%(hi)s %%.",
            pct=_percent(ratio), lo=_percent(low), hi=_percent(high))))
    if max_cells is not None:
        if delivered > max_cells:
            results.append(RuleResult("dose_cap", False, _(
                "Delivered dose %(d)s cells is above the maximum of %(cap)s cells.",
                d=f"{round(delivered):,}", cap=f"{round(max_cells):,}")))
        else:
            results.append(RuleResult("dose_cap", True, _("Dose is under the maximum of %(cap)s cells.",
                                                          cap=f"{round(max_cells):,}")))
    return DoseCheck(target, delivered, ratio, tuple(results))


def _percent(fraction: Decimal) -> str:
    return str((fraction * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


# --- Endotoxin ------------------------------------------------------------------------------------

def endotoxin_eu_per_kg(endotoxin_eu_per_ml: Decimal | float, volume_ml: Decimal | float,
                        weight_kg: Decimal | float) -> Decimal:
    """Endotoxin the patient receives per kg: lot result (EU/mL) × volume infused (mL) ÷ weight."""
    concentration = Decimal(str(endotoxin_eu_per_ml))
    volume = Decimal(str(volume_ml))
    weight = Decimal(str(weight_kg))
    if concentration < 0 or volume < 0:
        raise ValueError(_("Endotoxin and volume cannot be negative."))
    if weight <= 0:
        raise ValueError(_("Body weight must be positive."))
    return (concentration * volume / weight).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def check_endotoxin(eu_per_kg: Decimal, limit: Decimal | float = ENDOTOXIN_LIMIT_EU_PER_KG) -> RuleResult:
    limit = Decimal(str(limit))
    if eu_per_kg > limit:
        return RuleResult("endotoxin_per_kg", False, _(
            "Endotoxin %(v)s EU/kg is above the limit of %(lim)s EU/kg.", v=eu_per_kg, lim=limit))
    return RuleResult("endotoxin_per_kg", True, _("Endotoxin %(v)s EU/kg is within %(lim)s EU/kg.",
                                                  v=eu_per_kg, lim=limit))


# --- Follow-up ------------------------------------------------------------------------------------

def visit_due_date(day_one: dt.date, study_day: int) -> dt.date:
    """Study day 1 is the infusion (or randomization) day."""
    return day_one + dt.timedelta(days=study_day - 1)


def visit_status(day_one: dt.date | None, study_day: int, recorded: str | None, today: dt.date,
                 window_days: int = 3) -> str:
    """``done`` / ``missed`` (recorded as missed, or overdue past the window) / ``due`` / ``planned``."""
    if recorded in ("done", "missed"):
        return recorded
    if day_one is None:
        return "planned"
    due = visit_due_date(day_one, study_day)
    if today > due + dt.timedelta(days=window_days):
        return "missed"
    if today >= due - dt.timedelta(days=window_days):
        return "due"
    return "planned"


def length_of_stay_days(admitted: dt.date, discharged: dt.date) -> int:
    if discharged < admitted:
        raise ValueError(_("Discharge is before admission."))
    return (discharged - admitted).days
