"""Batch and vial states with their allowed transitions (DESIGN.md, "States").

The tables are the single source: services call ``check_*_transition`` before every state change,
and the status columns carry a database CHECK (``enum_column``) so no other value can be stored."""
from __future__ import annotations

import enum


from labsys.errors import InvalidTransition
from labsys.i18n import lazy_gettext as _l


class BatchStatus(str, enum.Enum):
    IN_PROCESS = "in_process"
    QUARANTINE = "quarantine"
    RELEASED_PENDING = "released_pending"
    RELEASED = "released"
    REJECTED = "rejected"
    RECALLED = "recalled"


BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    BatchStatus.IN_PROCESS: frozenset({BatchStatus.QUARANTINE, BatchStatus.REJECTED}),
    BatchStatus.QUARANTINE: frozenset({BatchStatus.RELEASED, BatchStatus.RELEASED_PENDING,
                                       BatchStatus.REJECTED}),
    BatchStatus.RELEASED_PENDING: frozenset({BatchStatus.RELEASED, BatchStatus.RECALLED}),
    BatchStatus.RELEASED: frozenset({BatchStatus.RECALLED}),
    BatchStatus.REJECTED: frozenset(),
    BatchStatus.RECALLED: frozenset(),
}


class VialStatus(str, enum.Enum):
    QUARANTINE = "quarantine"
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    THAWED = "thawed"
    DISPENSED = "dispensed"
    ADMINISTERED = "administered"
    DESTROYED = "destroyed"
    EXPIRED = "expired"
    RECALLED = "recalled"


PRE_ADMINISTRATION = frozenset({VialStatus.QUARANTINE, VialStatus.AVAILABLE, VialStatus.ALLOCATED,
                                VialStatus.THAWED, VialStatus.DISPENSED})
TERMINAL_VIAL_STATES = frozenset({VialStatus.DESTROYED, VialStatus.EXPIRED, VialStatus.RECALLED})
_END = frozenset({VialStatus.DESTROYED, VialStatus.EXPIRED, VialStatus.RECALLED})

VIAL_TRANSITIONS: dict[VialStatus, frozenset[VialStatus]] = {
    VialStatus.QUARANTINE: frozenset({VialStatus.AVAILABLE}) | _END,
    VialStatus.AVAILABLE: frozenset({VialStatus.ALLOCATED}) | _END,
    VialStatus.ALLOCATED: frozenset({VialStatus.THAWED, VialStatus.AVAILABLE}) | _END,
    VialStatus.THAWED: frozenset({VialStatus.DISPENSED}) | _END,
    VialStatus.DISPENSED: frozenset({VialStatus.ADMINISTERED}) | _END,
    VialStatus.ADMINISTERED: frozenset(),
    VialStatus.DESTROYED: frozenset(),
    VialStatus.EXPIRED: frozenset(),
    VialStatus.RECALLED: frozenset(),
}

# Vials that still sit in a storage position (a thawed or later vial has left the tank).
IN_STORAGE_STATES = frozenset({VialStatus.QUARANTINE, VialStatus.AVAILABLE, VialStatus.ALLOCATED})

BATCH_STATUS_LABELS = {
    BatchStatus.IN_PROCESS: _l("In process"),
    BatchStatus.QUARANTINE: _l("Quarantine"),
    BatchStatus.RELEASED_PENDING: _l("Released, results pending"),
    BatchStatus.RELEASED: _l("Released"),
    BatchStatus.REJECTED: _l("Rejected"),
    BatchStatus.RECALLED: _l("Recalled"),
}
VIAL_STATUS_LABELS = {
    VialStatus.QUARANTINE: _l("Quarantine"),
    VialStatus.AVAILABLE: _l("Available"),
    VialStatus.ALLOCATED: _l("Allocated"),
    VialStatus.THAWED: _l("Thawed"),
    VialStatus.DISPENSED: _l("Dispensed"),
    VialStatus.ADMINISTERED: _l("Administered"),
    VialStatus.DESTROYED: _l("Destroyed"),
    VialStatus.EXPIRED: _l("Expired"),
    VialStatus.RECALLED: _l("Recalled"),
}


def batch_may_move(current: BatchStatus, new: BatchStatus) -> bool:
    return BatchStatus(new) in BATCH_TRANSITIONS[BatchStatus(current)]


def vial_may_move(current: VialStatus, new: VialStatus) -> bool:
    return VialStatus(new) in VIAL_TRANSITIONS[VialStatus(current)]


def check_batch_transition(current: BatchStatus, new: BatchStatus) -> None:
    if not batch_may_move(current, new):
        raise InvalidTransition(f"A batch cannot go from {BatchStatus(current).value} to {BatchStatus(new).value}.",
                                [f"allowed from {BatchStatus(current).value}: "
                                 + (", ".join(sorted(s.value for s in BATCH_TRANSITIONS[BatchStatus(current)])) or "none")])


def check_vial_transition(current: VialStatus, new: VialStatus) -> None:
    if not vial_may_move(current, new):
        raise InvalidTransition(f"A vial cannot go from {VialStatus(current).value} to {VialStatus(new).value}.",
                                [f"allowed from {VialStatus(current).value}: "
                                 + (", ".join(sorted(s.value for s in VIAL_TRANSITIONS[VialStatus(current)])) or "none")])
