"""States of a potency run and of a calibrated parameter set, with their allowed transitions."""
from __future__ import annotations

import enum


from labsys.errors import InvalidTransition
from labsys.i18n import lazy_gettext as _l


class RunState(str, enum.Enum):
    DRAFT = "draft"
    SCORING = "scoring"
    SCORED = "scored"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    INVALID = "invalid"

    @property
    def label(self) -> str:
        return str(RUN_STATE_LABELS[self])


RUN_STATE_LABELS = {
    RunState.DRAFT: _l("Draft"),
    RunState.SCORING: _l("Scoring"),
    RunState.SCORED: _l("Scored"),
    RunState.REVIEWED: _l("Reviewed"),
    RunState.APPROVED: _l("Approved"),
    RunState.INVALID: _l("Invalid"),
}

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.DRAFT: frozenset({RunState.SCORING}),
    # A scoring job that could not start at all returns the run to draft.
    RunState.SCORING: frozenset({RunState.SCORED, RunState.DRAFT}),
    # Rescoring after an exclusion or a re-upload; review decides valid or invalid.
    RunState.SCORED: frozenset({RunState.SCORING, RunState.REVIEWED, RunState.INVALID}),
    RunState.REVIEWED: frozenset({RunState.APPROVED, RunState.INVALID}),
    RunState.APPROVED: frozenset(),
    RunState.INVALID: frozenset(),
}


def check_run_transition(current: RunState, target: RunState) -> None:
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransition(f"A {current.value} run cannot become {target.value}.",
                                [f"allowed from {current.value}: "
                                 + (", ".join(sorted(s.value for s in RUN_TRANSITIONS[current])) or "none")])


class ParameterSetState(str, enum.Enum):
    DRAFT = "draft"
    APPROVED = "approved"

    @property
    def label(self) -> str:
        return str({ParameterSetState.DRAFT: _l("Draft"), ParameterSetState.APPROVED: _l("Approved")}[self])


class WellCondition(str, enum.Enum):
    EMPTY = "empty"
    UNSTIMULATED = "unstimulated"
    LPS = "lps"
    TEST = "test"
    REFERENCE = "reference"

    @property
    def label(self) -> str:
        return str(CONDITION_LABELS[self])

    @property
    def short(self) -> str:
        return {"empty": "—", "unstimulated": "U", "lps": "L", "test": "T", "reference": "R"}[self.value]


CONDITION_LABELS = {
    WellCondition.EMPTY: _l("Empty"),
    WellCondition.UNSTIMULATED: _l("Unstimulated"),
    WellCondition.LPS: _l("LPS only"),
    WellCondition.TEST: _l("LPS + test lot"),
    WellCondition.REFERENCE: _l("LPS + reference lot"),
}
