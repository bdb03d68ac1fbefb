"""From a run's field scores to well scores, lot results and validity (using the pure rules).

Reads the ORM objects of one run and returns plain values; writes nothing."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from labsys.potency import rules
from labsys.potency.models import PotencyRun
from labsys.potency.states import WellCondition


@dataclass
class WellSummary:
    well: str
    condition: WellCondition
    lot_identifier: str | None
    ratio: str | None
    replicate_group: str
    fields_total: int
    fields_included: int
    fields_scored: int
    fields_failed: int
    score: float | None
    cell_count: int


@dataclass
class LotLine:
    lot_identifier: str
    role: str
    ratio: str
    well_count: int
    score: float | None
    cv_percent: float | None
    percent_inhibition: float | None
    relative_potency: float | None = None


@dataclass
class RunEvaluation:
    wells: dict[str, WellSummary]
    lps_score: float | None
    unstim_score: float | None
    z_prime: float | None
    lots: list[LotLine]
    validity: list[rules.RuleResult]
    groups: dict[str, list[float]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return rules.is_valid(self.validity)

    def validity_json(self) -> list[dict]:
        return [{"rule": r.name, "passed": r.passed, "message": r.message} for r in self.validity]


def limits_of(run: PotencyRun) -> rules.ValidityLimits:
    return rules.ValidityLimits(
        min_cells_per_field=run.min_cells_per_field,
        max_replicate_cv_percent=run.max_replicate_cv_percent,
        min_z_prime=run.min_z_prime,
        reference_min_inhibition=run.reference_min_inhibition,
        reference_max_inhibition=run.reference_max_inhibition,
    )


def evaluate_run(run: PotencyRun) -> RunEvaluation:
    """Well score = median over included, scored fields; condition score = mean of its replicate
    wells; % inhibition per lot and ratio and over all the lot's ratios; validity of the run."""
    measure = run.measure
    wells: dict[str, WellSummary] = {}
    field_counts: list[rules.FieldCount] = []
    failed: list[str] = []
    groups: dict[str, list[float]] = {}
    group_meta: dict[str, tuple[WellCondition, str | None, str | None]] = {}
    for well in run.wells:
        if well.condition == WellCondition.EMPTY:
            continue
        included = [image for image in well.images if not image.excluded]
        scored = [image.result for image in included if image.result is not None and image.result.status == "scored"]
        failures = [image for image in included if image.result is not None and image.result.status == "failed"]
        for image in failures:
            failed.append(f"{well.well} field {image.field_number}")
        for result in scored:
            field_counts.append(rules.FieldCount(well.well, result.image.field_number, result.cell_count or 0))
        score = rules.well_score(result.measure(measure) for result in scored)
        wells[well.well] = WellSummary(
            well.well, well.condition, well.lot_identifier, well.ratio, well.replicate_group,
            len(well.images), len(included), len(scored), len(failures), score,
            sum(result.cell_count or 0 for result in scored))
        if score is not None:
            groups.setdefault(well.replicate_group, []).append(score)
        group_meta[well.replicate_group] = (well.condition, well.lot_identifier, well.ratio)

    lps_scores = [s for g, values in groups.items() if group_meta[g][0] == WellCondition.LPS for s in values]
    unstim_scores = [s for g, values in groups.items() if group_meta[g][0] == WellCondition.UNSTIMULATED for s in values]
    lps_score = rules.lot_score(lps_scores)
    unstim_score = rules.lot_score(unstim_scores)

    lots: list[LotLine] = []
    by_lot: dict[tuple[str, str], dict[str, float | None]] = {}
    for group, (condition, lot, ratio) in group_meta.items():
        if condition not in (WellCondition.TEST, WellCondition.REFERENCE):
            continue
        values = groups.get(group, [])
        score = rules.lot_score(values)
        inhibition = rules.percent_inhibition(lps_score, score, unstim_score)
        role = "reference" if condition == WellCondition.REFERENCE else "test"
        lots.append(LotLine(lot or "", role, ratio or "", len(values), score, rules.cv_percent(values), inhibition))
        by_lot.setdefault((lot or "", role), {})[ratio or ""] = inhibition

    reference_by_ratio: dict[str, float | None] = {}
    for (lot, role), per_ratio in by_lot.items():
        if role == "reference":
            reference_by_ratio = per_ratio
    overall: list[LotLine] = []
    for (lot, role), per_ratio in sorted(by_lot.items()):
        lines = [line for line in lots if line.lot_identifier == lot and line.role == role]
        values = [s for line in lines for s in groups.get(_group_of(group_meta, line), [])]
        inhibitions = [v for v in per_ratio.values() if v is not None]
        relative = rules.relative_potency(per_ratio, reference_by_ratio) \
            if role == "test" and reference_by_ratio else None
        for line in lines:
            if role == "test" and reference_by_ratio and line.ratio in reference_by_ratio:
                line.relative_potency = rules.relative_potency({line.ratio: line.percent_inhibition},
                                                               {line.ratio: reference_by_ratio[line.ratio]})
        overall.append(LotLine(lot, role, "all", len(values), rules.lot_score(values), None,
                               statistics.fmean(inhibitions) if inhibitions else None, relative))
    lots.sort(key=lambda line: (line.role != "test", line.lot_identifier, line.ratio))
    lots = overall + lots

    reference_overall = next((line.percent_inhibition for line in overall if line.role == "reference"), None)
    replicate_groups = [rules.ReplicateGroup(_group_label(group, group_meta[group]), tuple(values))
                        for group, values in groups.items()]
    inputs = rules.ValidityInputs(
        field_counts=field_counts, replicate_groups=replicate_groups,
        lps_well_scores=lps_scores, unstim_well_scores=unstim_scores,
        reference_inhibition=reference_overall,
        reference_run=any(meta[0] == WellCondition.REFERENCE for meta in group_meta.values()),
        failed_fields=failed)
    validity = rules.evaluate_validity(inputs, limits_of(run))
    return RunEvaluation(wells, lps_score, unstim_score, rules.z_prime(lps_scores, unstim_scores),
                         lots, validity, groups)


def _group_of(group_meta: dict, line: LotLine) -> str:
    for group, (condition, lot, ratio) in group_meta.items():
        role = "reference" if condition == WellCondition.REFERENCE else "test"
        if condition in (WellCondition.TEST, WellCondition.REFERENCE) and lot == line.lot_identifier \
                and role == line.role and ratio == line.ratio:
            return group
    return ""


def _group_label(group: str, meta: tuple[WellCondition, str | None, str | None]) -> str:
    condition, lot, ratio = meta
    if condition in (WellCondition.TEST, WellCondition.REFERENCE):
        return f"{lot} @ {ratio}"
    return condition.value


def replicate_group_for(condition: WellCondition, lot: str | None, ratio: str | None) -> str:
    if condition in (WellCondition.TEST, WellCondition.REFERENCE):
        return f"{condition.value}:{lot}:{ratio}"
    return condition.value
