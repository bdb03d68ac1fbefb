"""Recording and verifying the audit trail.

The floor of the application: it knows actors only by id and printed name and imports no
feature. Services change regulated records inside ``unit_of_work``; a flush listener writes one
audit entry per created or changed regulated record, in the same transaction, chained by SHA-256.
"""
from __future__ import annotations

import contextlib
import os
import contextvars
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from flask import current_app
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.orm import Mapper, Session

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


def _keep_old_value(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    return value


@event.listens_for(Mapper, "mapper_configured")
def _load_old_values_of_regulated_records(mapper: Mapper, class_: type) -> None:
    """Setting an attribute of a regulated record loads its old value first (active history),
    so the audit entry always has the true old value, even for expired objects."""
    if issubclass(class_, Audited):
        for column_attr in mapper.column_attrs:
            event.listen(getattr(class_, column_attr.key), "set", _keep_old_value,
                         active_history=True, retval=True)


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
    return values_hash(inspect(obj).mapper.persist_selectable.name, snapshot(obj))


def values_hash(table_name: str, values: dict[str, Any]) -> str:
    """``record_hash`` of a record given as its table name and snapshot values."""
    return hashlib.sha256(canonical_json({"type": table_name, "values": values}).encode()).hexdigest()


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


HASHED_COLUMNS = ("seq", "recorded_at", "user_id", "actor_name", "action", "entity_type",
                  "entity_id", "old_values", "new_values", "reason", "prev_hash")


def iso_utc(value: dt.datetime | str) -> str:
    """The one text form of an entry's time that is hashed: ISO 8601, UTC, microseconds.
    SQLite hands back its stored text ('YYYY-MM-DD HH:MM:SS.ffffff', always UTC here)."""
    if isinstance(value, str):
        return value.replace(" ", "T", 1) + "+00:00"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


# The same output as json.dumps(..., ensure_ascii=False, separators=(",", ":")), without building
# an encoder per entry (verification hashes a million entries).
_HASH_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_sha256 = hashlib.sha256


def entry_hash(values: tuple | list) -> str:
    """SHA-256 over the canonical JSON array of an entry's columns in HASHED_COLUMNS order,
    with the time as ``iso_utc`` text and the previous entry's hash last."""
    return _sha256(_HASH_JSON(list(values)).encode()).hexdigest()


def _append(connection: Any, rows: list[dict[str, Any]]) -> None:
    """Append rows to the chain; the caller's transaction holds the chain lock until it ends."""
    if not rows:
        return
    lock_audit_chain(connection)
    head = connection.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    connection.execute(AuditEntry.__table__.insert(), chained_entries(rows, seq, prev_hash, utcnow()))


def chained_entries(rows: Iterable[dict[str, Any]], seq: int, prev_hash: str,
                    now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The audit_entries rows for ``rows`` appended after entry ``seq`` whose hash is ``prev_hash``:
    numbered, hashed and linked. A row's time is its ``at`` (bulk loads of dated history), else
    ``now``."""
    inserts = []
    for row in rows:
        seq += 1
        at = row.get("at") or now
        old_json = None if row["old"] is None else canonical_json(row["old"])
        new_json = None if row["new"] is None else canonical_json(row["new"])
        values = (seq, iso_utc(at), row["actor"].user_id, row["actor"].name, row["action"],
                  row["entity_type"], row["entity_id"], old_json, new_json, row["reason"], prev_hash)
        digest = entry_hash(values)
        inserts.append({**dict(zip(HASHED_COLUMNS, values)), "recorded_at": at, "hash": digest})
        prev_hash = digest
    return inserts


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
    entity_type = inspect(obj).mapper.persist_selectable.name
    return {"actor": context.actor, "action": f"{context.action}" if context.action else verb,
            "entity_type": entity_type, "entity_id": entity_id_of(obj), "old": old, "new": new,
            "reason": context.reason}


def entity_id_of(obj: Any) -> str | None:
    """The record's primary key as text. Read from the mapper, not the identity key: a row
    inserted by the flush being audited has its key values but no identity key yet."""
    values = inspect(obj).mapper.primary_key_from_instance(obj)
    if any(value is None for value in values):
        return None
    return "/".join(str(value) for value in values)


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


_VERIFY_SQL = ("SELECT seq, {recorded_at}, user_id, actor_name, action, entity_type, entity_id, "
               "old_values, new_values, reason, prev_hash, hash FROM audit_entries "
               "WHERE seq BETWEEN :first AND :last ORDER BY seq")
# PostgreSQL renders the time as the same UTC text SQLite stores, so that verification does not
# parse and re-format a million timestamps (iso_utc turns either into the hashed form).
_VERIFY_CHUNK = 50_000
_VERIFY_TIME = {"postgresql": "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"}


def verify_range(connection: Any, first: int, last: int, at_hash: str | None = None) -> dict[str, Any]:
    """Check entries first..last: continuous sequence, each hash, each link inside the range.
    Returns the range's first prev-hash and last hash so that ranges can be joined."""
    expected_seq = first
    previous: str | None = None
    start_prev: str | None = None
    found = False
    sql = text(_VERIFY_SQL.format(recorded_at=_VERIFY_TIME.get(connection.dialect.name, "recorded_at")))
    chunks = ((lo, min(lo + _VERIFY_CHUNK - 1, last)) for lo in range(first, last + 1, _VERIFY_CHUNK))
    rows = (row for lo, hi in chunks  # bounded memory: one chunk of rows at a time
            for row in connection.execute(sql, {"first": lo, "last": hi}).all())
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            return {"ok": False, "broken_seq": seq, "problem": f"entry {expected_seq} is missing (next is {seq})"}
        prev_hash, stored = row[10], row[11]
        if previous is None:
            start_prev = prev_hash
        elif prev_hash != previous:
            return {"ok": False, "broken_seq": seq, "problem": "its previous-hash does not match the entry before it"}
        values = (seq, iso_utc(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], prev_hash)
        if entry_hash(values) != stored:
            return {"ok": False, "broken_seq": seq, "problem": "its content does not match its hash"}
        if at_hash is not None and stored == at_hash:
            found = True
        previous = stored
        expected_seq += 1
    if expected_seq != last + 1:
        return {"ok": False, "broken_seq": expected_seq, "problem": f"entry {expected_seq} is missing"}
    return {"ok": True, "first_seq": first, "start_prev": start_prev, "end_hash": previous, "found": found}


def _verify_worker(arguments: tuple[str, dict, int, int, str | None]) -> dict[str, Any]:
    from sqlalchemy import create_engine

    url, connect_args, first, last, at_hash = arguments
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            return verify_range(connection, first, last, at_hash)
    finally:
        engine.dispose()


PARALLEL_THRESHOLD = 200_000


def verify_chain(session: Session, at_hash: str | None = None, workers: int | None = None) -> VerifyResult:
    """Replay the whole chain: sequence continuity, previous-hash links and each entry's hash.
    Long chains are checked in parallel ranges (one process per core) and the ranges joined."""
    bounds = session.execute(select(func.min(AuditEntry.seq), func.max(AuditEntry.seq),
                                    func.count())).one()
    session.rollback()
    first, last, count = bounds
    if not count:
        return VerifyResult(True, 0, GENESIS_HASH, found_at=None if at_hash is None else False)
    if first != 1:
        return VerifyResult(False, count, GENESIS_HASH, 1, f"entry 1 is missing (first is {first})")
    workers = workers or (os.cpu_count() or 1)
    engine = session.get_bind()
    if count >= PARALLEL_THRESHOLD and workers > 1:
        import multiprocessing

        step = -(-last // workers)
        ranges = [(lo, min(lo + step - 1, last)) for lo in range(1, last + 1, step)]
        url = engine.url.render_as_string(hide_password=False)
        connect_args = current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}).get("connect_args", {})
        with multiprocessing.get_context("spawn").Pool(len(ranges)) as pool:
            parts = pool.map(_verify_worker, [(url, connect_args, lo, hi, at_hash) for lo, hi in ranges])
    else:
        with engine.connect() as connection:
            parts = [verify_range(connection, 1, last, at_hash)]
    expected_prev = GENESIS_HASH
    for part in parts:
        if not part["ok"]:
            return VerifyResult(False, count, expected_prev, part["broken_seq"], part["problem"])
        if part["start_prev"] != expected_prev:
            return VerifyResult(False, count, expected_prev, part["first_seq"],
                                "its previous-hash does not match the entry before it")
        expected_prev = part["end_hash"]
    found = None if at_hash is None else any(part["found"] for part in parts)
    return VerifyResult(True, count, expected_prev, found_at=found)


def chain_head(session: Session) -> str:
    head = session.execute(select(AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).scalar()
    return head or GENESIS_HASH
