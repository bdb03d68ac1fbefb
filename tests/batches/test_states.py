"""Vial and batch state machines as tables (DESIGN.md, "States")."""
import pytest

from labsys.batches.states import (BATCH_TRANSITIONS, VIAL_TRANSITIONS, BatchStatus, VialStatus, batch_may_move,
                                   check_batch_transition, check_vial_transition, vial_may_move)
from labsys.errors import InvalidTransition

V = VialStatus
ALLOWED_VIAL_MOVES = {
    (V.QUARANTINE, V.AVAILABLE), (V.AVAILABLE, V.ALLOCATED), (V.ALLOCATED, V.THAWED), (V.THAWED, V.DISPENSED),
    (V.DISPENSED, V.ADMINISTERED), (V.ALLOCATED, V.AVAILABLE),
    *((s, end) for s in (V.QUARANTINE, V.AVAILABLE, V.ALLOCATED, V.THAWED, V.DISPENSED)
      for end in (V.DESTROYED, V.EXPIRED, V.RECALLED)),
}


@pytest.mark.parametrize("current", list(VialStatus))
@pytest.mark.parametrize("new", list(VialStatus))
def test_vial_transitions_follow_the_design_table_exactly(current, new):
    assert vial_may_move(current, new) is ((current, new) in ALLOWED_VIAL_MOVES)
    if (current, new) in ALLOWED_VIAL_MOVES:
        check_vial_transition(current, new)
    else:
        with pytest.raises(InvalidTransition):
            check_vial_transition(current, new)


@pytest.mark.parametrize("final", [V.ADMINISTERED, V.DESTROYED, V.EXPIRED, V.RECALLED])
def test_administered_and_end_states_are_final(final):
    assert VIAL_TRANSITIONS[final] == frozenset()


B = BatchStatus
ALLOWED_BATCH_MOVES = {(B.IN_PROCESS, B.QUARANTINE), (B.IN_PROCESS, B.REJECTED), (B.QUARANTINE, B.RELEASED),
                       (B.QUARANTINE, B.RELEASED_PENDING), (B.QUARANTINE, B.REJECTED),
                       (B.RELEASED_PENDING, B.RELEASED), (B.RELEASED_PENDING, B.RECALLED), (B.RELEASED, B.RECALLED)}


@pytest.mark.parametrize("current", list(BatchStatus))
@pytest.mark.parametrize("new", list(BatchStatus))
def test_batch_transitions_follow_the_design_table_exactly(current, new):
    assert batch_may_move(current, new) is ((current, new) in ALLOWED_BATCH_MOVES)
    if (current, new) not in ALLOWED_BATCH_MOVES:
        with pytest.raises(InvalidTransition):
            check_batch_transition(current, new)


def test_every_state_has_a_row_in_its_table():
    assert set(VIAL_TRANSITIONS) == set(VialStatus)
    assert set(BATCH_TRANSITIONS) == set(BatchStatus)
