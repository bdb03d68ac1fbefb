"""Recording and verifying the audit trail.

The floor of the application: it knows actors only by id and printed name and imports no
feature. Services change regulated records inside ``unit_of_work``; a flush listener writes one
audit entry per created or changed regulated record, in the same transaction, chained by SHA-256.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from labsys.audit.models import GENESIS_HASH, AuditEntry
from labsys.db import canonical_json, lock_audit_chain, utcnow, write_transaction
from labsys.errors import RuleViolation
from labsys.extensions import db


@dataclass(frozen=True)
class Actor:
    """Who acts: the user's id (None for the system) and printed name."""

    user_id: int | None
    name: str

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        return cls(None, name)


@dataclass(frozen=True)
class AuditContext:
    actor: Actor
    action: str
    reason: str | None


_context: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "labsys_audit_context", default=None)


class Audited:
    """Mixin for regulated records: every insert and update is audited; deletes are refused.

    ``__audit_exclude__`` names columns kept out of the trail (secrets are masked instead)."""

    __audit_exclude__: tuple[str, ...] = ()
    __audit_mask__: tuple[str, ...] = ()


def snapshot(obj: Any) -> dict[str, Any]:
    """The column values of a record, as they stand now (masked columns hidden)."""
    mapper = inspect(obj).mapper
    values: dict[str, Any] = {}
    for column_attr in mapper.column_attrs:
        key = column_attr.key
        if key in getattr(obj, "__audit_exclude__", ()):
            continue
        value = getattr(obj, key)
        values[key] = "***" if key in getattr(obj, "__audit_mask__", ()) and value is not None else value
    return values


def record_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of a record's current version (what a signature binds)."""
    return hashlib.sha256(canonical_json({"type": inspect(obj).mapper.persist_selectable.name,
                                          "values": snapshot(obj)}).encode()).hexdigest()


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for column_attr in state.mapper.column_attrs:
        key = column_attr.key
        if key in getattr(obj, "__audit_exclude__", ()):
            continue
        history = state.attrs[key].history
        if not history.has_changes():
            continue
        before = history.deleted[0] if history.deleted else None
        after = history.added[0] if history.added else None
        if before == after:
            continue
        masked = key in getattr(obj, "__audit_mask__", ())
        old[key] = "***" if masked and before is not None else before
        new[key] = "***" if masked and after is not None else after
    return old, new


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def _hash_fields(seq: int, recorded_at: dt.datetime, user_id: int | None, actor_name: str,
                 action: str, entity_type: str, entity_id: str | None, old_values: str | None,
                 new_values: str | None, reason: str | None, prev_hash: str) -> dict[str, Any]:
    return {
        "seq": seq, "recorded_at": recorded_at, "user_id": user_id, "actor_name": actor_name,
        "action": action, "entity_type": entity_type, "entity_id": entity_id,
        "old_values": old_values, "new_values": new_values, "reason": reason,
        "prev_hash": prev_hash,
    }


def _append(connection: Any, rows: list[dict[str, Any]]) -> None:
    """Append rows to the chain; the caller's transaction holds the chain lock until it ends."""
    if not rows:
        return
    lock_audit_chain(connection)
    head = connection.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    now = utcnow()
    inserts = []
    for row in rows:
        seq += 1
        old_json = None if row["old"] is None else canonical_json(row["old"])
        new_json = None if row["new"] is None else canonical_json(row["new"])
        fields = _hash_fields(seq, now, row["actor"].user_id, row["actor"].name, row["action"],
                              row["entity_type"], row["entity_id"], old_json, new_json,
                              row["reason"], prev_hash)
        digest = entry_hash(fields)
        inserts.append({**fields, "recorded_at": now, "hash": digest})
        prev_hash = digest
    connection.execute(AuditEntry.__table__.insert(), inserts)


def _pending(session: Session) -> list[dict[str, Any]]:
    return session.info.setdefault("labsys_audit_rows", [])


@event.listens_for(Session, "after_flush")
def _audit_flush(session: Session, flush_context: Any) -> None:
    """Write an audit entry for every regulated record this flush created or changed."""
    regulated_new = [o for o in session.new if isinstance(o, Audited)]
    regulated_dirty = [o for o in session.dirty if isinstance(o, Audited) and session.is_modified(o)]
    regulated_deleted = [o for o in session.deleted if isinstance(o, Audited)]
    explicit = _pending(session)
    if not (regulated_new or regulated_dirty or regulated_deleted or explicit):
        return
    if regulated_deleted:
        raise RuleViolation("Regulated records are never deleted.",
                            [f"{type(o).__name__} {inspect(o).identity}" for o in regulated_deleted])
    context = _context.get()
    if context is None and (regulated_new or regulated_dirty):
        raise RuntimeError("a regulated record changed outside unit_of_work(): no actor to audit")
    rows: list[dict[str, Any]] = []
    for obj in sorted(regulated_new, key=lambda o: (type(o).__name__, str(inspect(o).identity))):
        rows.append(_row_for(context, obj, "create", None, snapshot(obj)))
    for obj in sorted(regulated_dirty, key=lambda o: (type(o).__name__, str(inspect(o).identity))):
        old, new = _changes(obj)
        if new or old:
            rows.append(_row_for(context, obj, "update", old, new))
    rows.extend(explicit)
    explicit.clear()
    _append(session.connection(), rows)


@event.listens_for(Session, "after_soft_rollback")
def _forget_events(session: Session, previous_transaction: Any) -> None:
    """Events queued in a transaction that rolled back were never true: drop them."""
    _pending(session).clear()


def _flush_events(session: Session) -> None:
    """Write queued events that no record flush carried (a flush with no changes is a no-op)."""
    rows = list(_pending(session))
    _pending(session).clear()
    _append(session.connection(), rows)


def _row_for(context: AuditContext | None, obj: Any, verb: str, old: dict | None,
             new: dict | None) -> dict[str, Any]:
    assert context is not None
    identity = inspect(obj).identity
    entity_id = None if identity is None else "/".join(str(part) for part in identity)
    entity_type = inspect(obj).mapper.persist_selectable.name
    return {"actor": context.actor, "action": f"{context.action}" if context.action else verb,
            "entity_type": entity_type, "entity_id": entity_id, "old": old, "new": new,
            "reason": context.reason}


def current_context() -> AuditContext | None:
    return _context.get()


@contextlib.contextmanager
def unit_of_work(actor: Actor, action: str, reason: str | None = None, *,
                 reason_required: bool = False) -> Iterator[Session]:
    """The service boundary: set who acts and why, yield the session, flush, audit, commit once.

    On any exception everything is rolled back: no partial record and no audit entry remain."""
    if reason_required and not (reason and reason.strip()):
        raise RuleViolation("A reason is required for this change.", ["reason: required"],
                            field="reason")
    if _context.get() is not None:
        raise RuntimeError("unit_of_work() does not nest")
    token = _context.set(AuditContext(actor, action, reason.strip() if reason else None))
    session = db.session
    try:
        with write_transaction(session):
            yield session
            session.flush()
            _flush_events(session)
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        _context.reset(token)


def record_event(actor: Actor, action: str, entity_type: str, entity_id: Any = None,
                 details: dict[str, Any] | None = None, reason: str | None = None,
                 old: dict[str, Any] | None = None) -> None:
    """Queue an audit entry for something that is not a record change (a login, a refused
    attempt, a print); it is written at the next flush of the current transaction."""
    _pending(db.session).append({
        "actor": actor, "action": action, "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id), "old": old,
        "new": details, "reason": reason,
    })


def record_event_now(actor: Actor, action: str, entity_type: str, entity_id: Any = None,
                     details: dict[str, Any] | None = None, reason: str | None = None) -> None:
    """Write an event in its own transaction (e.g. a refused attempt, while the work is refused)."""
    with write_transaction(db.session):
        record_event(actor, action, entity_type, entity_id, details, reason)
        _flush_events(db.session)
        db.session.commit()


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None
    found_at: bool | None = None


def verify_chain(session: Session, at_hash: str | None = None) -> VerifyResult:
    """Replay the whole chain: sequence continuity, previous-hash links and each entry's hash."""
    query = select(
        AuditEntry.seq, AuditEntry.recorded_at, AuditEntry.user_id, AuditEntry.actor_name,
        AuditEntry.action, AuditEntry.entity_type, AuditEntry.entity_id, AuditEntry.old_values,
        AuditEntry.new_values, AuditEntry.reason, AuditEntry.prev_hash, AuditEntry.hash,
    ).order_by(AuditEntry.seq)
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    found_at = None if at_hash is None else False
    for row in session.execute(query.execution_options(yield_per=5000)):
        count += 1
        if row.seq != expected_seq:
            return VerifyResult(False, count, expected_prev, row.seq,
                                f"entry {expected_seq} is missing (next is {row.seq})")
        if row.prev_hash != expected_prev:
            return VerifyResult(False, count, expected_prev, row.seq,
                                "its previous-hash does not match the entry before it")
        fields = _hash_fields(row.seq, row.recorded_at, row.user_id, row.actor_name, row.action,
                              row.entity_type, row.entity_id, row.old_values, row.new_values,
                              row.reason, row.prev_hash)
        if entry_hash(fields) != row.hash:
            return VerifyResult(False, count, expected_prev, row.seq,
                                "its content does not match its hash")
        if at_hash is not None and row.hash == at_hash:
            found_at = True
        expected_prev = row.hash
        expected_seq += 1
    return VerifyResult(True, count, expected_prev, found_at=found_at)


def chain_head(session: Session) -> str:
    head = session.execute(select(AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
    return head or GENESIS_HASH
