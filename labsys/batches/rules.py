"""Pure decisions for donors, cords, passages, reagents and fill: no Flask app, no database.

Each check returns every problem it finds as ``(field, message)`` so a form can show them all
beside the fields concerned; an empty list means the rule holds."""
from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping

from labsys.i18n import lazy_gettext as _l

Problem = tuple[str, str]


class Marker(str, enum.Enum):
    """Infectious-disease markers tested on the birth mother's specimen (21 CFR 1271.85)."""

    HIV_AB = "hiv_ab"
    HIV_NAT = "hiv_nat"
    HBSAG = "hbsag"
    ANTI_HBC = "anti_hbc"
    HCV_AB = "hcv_ab"
    HCV_NAT = "hcv_nat"
    SYPHILIS = "syphilis"
    HTLV = "htlv"
    CMV = "cmv"


MARKER_LABELS = {
    Marker.HIV_AB: _l("HIV-1/2 antibody"),
    Marker.HIV_NAT: _l("HIV-1 NAT"),
    Marker.HBSAG: _l("HBsAg"),
    Marker.ANTI_HBC: _l("Anti-HBc (total)"),
    Marker.HCV_AB: _l("HCV antibody"),
    Marker.HCV_NAT: _l("HCV NAT"),
    Marker.SYPHILIS: _l("Syphilis (Treponema pallidum)"),
    Marker.HTLV: _l("HTLV-I/II antibody"),
    Marker.CMV: _l("CMV"),
}


class MarkerResult(str, enum.Enum):
    NOT_TESTED = "not_tested"
    NON_REACTIVE = "non_reactive"
    REACTIVE = "reactive"
    INDETERMINATE = "indeterminate"


MARKER_RESULT_LABELS = {
    MarkerResult.NOT_TESTED: _l("Not yet tested"),
    MarkerResult.NON_REACTIVE: _l("Non-reactive"),
    MarkerResult.REACTIVE: _l("Reactive"),
    MarkerResult.INDETERMINATE: _l("Indeterminate"),
}


class ScreeningOutcome(str, enum.Enum):
    PENDING = "pending"
    ACCEPTABLE = "acceptable"
    NOT_ACCEPTABLE = "not_acceptable"


SCREENING_LABELS = {
    ScreeningOutcome.PENDING: _l("Pending"),
    ScreeningOutcome.ACCEPTABLE: _l("Acceptable (no risk factors)"),
    ScreeningOutcome.NOT_ACCEPTABLE: _l("Not acceptable (risk factor found)"),
}


class Eligibility(str, enum.Enum):
    PENDING = "pending"
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"


ELIGIBILITY_LABELS = {
    Eligibility.PENDING: _l("Pending"),
    Eligibility.ELIGIBLE: _l("Eligible"),
    Eligibility.INELIGIBLE: _l("Ineligible"),
}


@dataclass(frozen=True)
class EligibilityDecision:
    outcome: Eligibility
    reasons: list[str]


def donor_eligibility(consent_date: dt.date | None, screening: ScreeningOutcome,
                      markers: Mapping[Marker, MarkerResult], specimen_date: dt.date | None,
                      collection_date: dt.date | None = None, window_days: int = 7) -> EligibilityDecision:
    """Eligibility of a cord donor (21 CFR 1271.45-.85), with every reason.

    Ineligible: screening not acceptable, any marker reactive or indeterminate (a conservative
    reading: CMV reactive also excludes for this trial), or a specimen taken outside ±window days
    of cord collection. Pending: no consent, screening pending, a marker not yet tested, or no
    specimen date. Eligible only when none of those holds."""
    ineligible: list[str] = []
    pending: list[str] = []
    if consent_date is None:
        pending.append(str(_l("Consent date not recorded.")))
    if screening == ScreeningOutcome.NOT_ACCEPTABLE:
        ineligible.append(str(_l("Screening questionnaire found a risk factor.")))
    elif screening == ScreeningOutcome.PENDING:
        pending.append(str(_l("Screening questionnaire outcome pending.")))
    for marker in Marker:
        result = MarkerResult(markers.get(marker, MarkerResult.NOT_TESTED))
        label = str(MARKER_LABELS[marker])
        if result in (MarkerResult.REACTIVE, MarkerResult.INDETERMINATE):
            ineligible.append(str(_l("%(marker)s is %(result)s.", marker=label,
                                     result=str(MARKER_RESULT_LABELS[result]).lower())))
        elif result == MarkerResult.NOT_TESTED:
            pending.append(str(_l("%(marker)s not yet tested.", marker=label)))
    if specimen_date is None:
        pending.append(str(_l("Specimen sample date not recorded.")))
    elif collection_date is not None and not specimen_within_window(specimen_date, collection_date, window_days):
        ineligible.append(str(_l("Specimen taken %(days)d days from cord collection (limit ±%(limit)d).",
                                 days=abs((specimen_date - collection_date).days), limit=window_days)))
    if ineligible:
        return EligibilityDecision(Eligibility.INELIGIBLE, ineligible + pending)
    if pending:
        return EligibilityDecision(Eligibility.PENDING, pending)
    return EligibilityDecision(Eligibility.ELIGIBLE, [])


def specimen_within_window(specimen_date: dt.date, collection_date: dt.date, window_days: int = 7) -> bool:
    """21 CFR 1271.80(b): the specimen is collected within ``window_days`` before or after."""
    return abs((specimen_date - collection_date).days) <= window_days


def cord_receipt_problems(collected_at: dt.datetime, received_at: dt.datetime,
                          transport_temperature_c: Decimal | float, now: dt.datetime,
                          max_hours: float, min_temperature_c: float,
                          max_temperature_c: float) -> tuple[list[Problem], list[Problem]]:
    """Why a cord may not be accepted as received, as ``(impossible, out_of_limits)``.

    Impossible entries (future or out-of-order times) are always refused; a cord too old at
    receipt or transported outside the temperature range is refused unless accepted under a
    deviation. Both lists empty when acceptable."""
    impossible: list[Problem] = []
    problems: list[Problem] = []
    if collected_at > now:
        impossible.append(("collected_at", str(_l("Collection time is in the future."))))
    if received_at > now:
        impossible.append(("received_at", str(_l("Receipt time is in the future."))))
    if received_at < collected_at:
        impossible.append(("received_at", str(_l("Receipt is before collection."))))
    else:
        hours = (received_at - collected_at).total_seconds() / 3600
        if hours > max_hours:
            problems.append(("received_at", str(_l(
                "Received %(hours).1f h after collection; the limit is %(limit)s h.", hours=hours, limit=max_hours))))
    temperature = float(transport_temperature_c)
    if not min_temperature_c <= temperature <= max_temperature_c:
        problems.append(("transport_temperature_c", str(_l(
            "Transport temperature %(t)s °C is outside %(lo)s–%(hi)s °C.", t=transport_temperature_c,
            lo=min_temperature_c, hi=max_temperature_c))))
    return impossible, problems


def population_doublings(seeded_viable_cells: int, harvested_viable_cells: int) -> Decimal:
    """PD = log2(harvested / seeded), to 3 decimals. Negative when cells were lost."""
    if seeded_viable_cells <= 0 or harvested_viable_cells <= 0:
        raise ValueError("cell counts must be positive")
    value = math.log2(harvested_viable_cells / seeded_viable_cells)
    return Decimal(f"{value:.3f}")


def cumulative_population_doublings(doublings: list[Decimal | None]) -> list[Decimal | None]:
    """Running sum of PD in passage order; a passage without a PD (e.g. explant P0 with no seeded
    count) contributes nothing but keeps its place."""
    total = Decimal("0")
    result: list[Decimal | None] = []
    for value in doublings:
        if value is not None:
            total += value
        result.append(total)
    return result


def passage_problems(passage_number: int, previous_numbers: list[int], limit: int,
                     seeded_viable_cells: int | None, harvested_viable_cells: int | None,
                     viability_percent: Decimal | float | None, confluence_percent: Decimal | float | None,
                     flask_count: int | None, seeded_required: bool = True) -> list[Problem]:
    """A passage is refused beyond the limit, out of sequence, or with impossible numbers."""
    problems: list[Problem] = []
    if passage_number < 0:
        problems.append(("passage_number", str(_l("The passage number cannot be negative."))))
    elif passage_number > limit:
        problems.append(("passage_number", str(_l(
            "P%(n)d is beyond the passage limit P%(limit)d.", n=passage_number, limit=limit))))
    expected = (max(previous_numbers) + 1) if previous_numbers else 0
    if passage_number in previous_numbers:
        problems.append(("passage_number", str(_l("P%(n)d is already recorded.", n=passage_number))))
    elif passage_number >= 0 and passage_number != expected:
        problems.append(("passage_number", str(_l("The next passage is P%(n)d.", n=expected))))
    if seeded_viable_cells is None:
        if seeded_required:
            problems.append(("seeded_viable_cells", str(_l("Enter the viable cells seeded."))))
    elif seeded_viable_cells <= 0:
        problems.append(("seeded_viable_cells", str(_l("The count must be a positive number of cells."))))
    if harvested_viable_cells is None:
        problems.append(("harvested_viable_cells", str(_l("Enter the viable cells harvested."))))
    elif harvested_viable_cells <= 0:
        problems.append(("harvested_viable_cells", str(_l("The count must be a positive number of cells."))))
    if viability_percent is None or not 0 <= float(viability_percent) <= 100:
        problems.append(("viability_percent", str(_l("Viability must be between 0 and 100 %."))))
    if confluence_percent is not None and not 0 <= float(confluence_percent) <= 100:
        problems.append(("confluence_percent", str(_l("Confluence must be between 0 and 100 %."))))
    if flask_count is not None and flask_count < 1:
        problems.append(("flask_count", str(_l("At least one flask."))))
    return problems


def time_order_problems(started_at: dt.datetime | None, ended_at: dt.datetime | None,
                        now: dt.datetime, not_before: dt.datetime | None = None) -> list[Problem]:
    problems: list[Problem] = []
    if started_at is not None and started_at > now:
        problems.append(("started_at", str(_l("The start is in the future."))))
    if ended_at is not None and ended_at > now:
        problems.append(("ended_at", str(_l("The end is in the future."))))
    if started_at is not None and ended_at is not None and ended_at < started_at:
        problems.append(("ended_at", str(_l("The end is before the start."))))
    if started_at is not None and not_before is not None and started_at < not_before:
        problems.append(("started_at", str(_l("The start is before the cord was received."))))
    return problems


class ReagentStatus(str, enum.Enum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    REJECTED = "rejected"


REAGENT_STATUS_LABELS = {
    ReagentStatus.QUARANTINE: _l("Quarantine"),
    ReagentStatus.RELEASED: _l("Released"),
    ReagentStatus.REJECTED: _l("Rejected"),
}


def reagent_use_problems(item: str, lot: str, status: ReagentStatus, expiry_date: dt.date,
                         use_date: dt.date) -> list[str]:
    """A reagent lot may be used only when released and not expired on the day of use."""
    problems = []
    if ReagentStatus(status) != ReagentStatus.RELEASED:
        problems.append(str(_l("%(item)s lot %(lot)s is %(status)s, not released.", item=item, lot=lot,
                               status=str(REAGENT_STATUS_LABELS[ReagentStatus(status)]).lower())))
    if expiry_date < use_date:
        problems.append(str(_l("%(item)s lot %(lot)s expired on %(date)s.", item=item, lot=lot,
                               date=expiry_date.isoformat())))
    return problems


def fill_problems(vial_count: int | None, viable_cells_per_vial: int | None, volume_ml: Decimal | float | None,
                  viability_percent: Decimal | float | None, harvested_viable_cells: int | None,
                  max_vials: int = 999) -> list[Problem]:
    problems: list[Problem] = []
    if vial_count is None or not 1 <= vial_count <= max_vials:
        problems.append(("vial_count", str(_l("Between 1 and %(n)d vials.", n=max_vials))))
    if viable_cells_per_vial is None or viable_cells_per_vial <= 0:
        problems.append(("viable_cells_per_vial", str(_l("The count must be a positive number of cells."))))
    if volume_ml is None or float(volume_ml) <= 0:
        problems.append(("volume_ml", str(_l("The volume must be positive."))))
    if viability_percent is None or not 0 <= float(viability_percent) <= 100:
        problems.append(("viability_percent", str(_l("Viability must be between 0 and 100 %."))))
    if (not problems and harvested_viable_cells is not None
            and vial_count * viable_cells_per_vial > harvested_viable_cells):  # type: ignore[operator]
        problems.append(("vial_count", str(_l(
            "%(n)d vials × %(c)d cells need more cells than the %(h)d harvested.", n=vial_count,
            c=viable_cells_per_vial, h=harvested_viable_cells))))
    return problems
