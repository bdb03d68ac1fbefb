"""Database foundations: declarative base with a constraint naming convention, a UTC timestamp
type, engine hardening for SQLite, and the lock that serializes audit-chain writes."""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import time
import weakref
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, MetaData, event, exc, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: store UTC-aware timestamps")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def json_default(value: Any) -> Any:
    """Canonical JSON for audit values and signed records: language-neutral, stable."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=json_default)


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with the dialect's ping before it is used only when it has sat
    idle for ``idle_seconds`` or more (a database restarted meanwhile, a firewall dropping idle
    connections). SQLAlchemy's ``pool_pre_ping`` pings on every checkout: on PostgreSQL one round
    trip of the five a scan makes, in steady use, for connections that answered a moment ago.
    A failed ping makes the pool replace the connection (DisconnectionError), as pre-ping does.
    A connection that breaks while in steady use fails its request once and the pool is then
    renewed (SQLAlchemy invalidates it on the disconnect error)."""

    @event.listens_for(engine, "checkin")
    def _idle_from_now(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["labsys_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        since = connection_record.info.get("labsys_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its check: {error}") from error


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite: foreign keys on, WAL, a busy timeout, and manual transaction control so that a
    writing transaction starts with BEGIN IMMEDIATE (see ``write_transaction``)."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception:  # in-memory databases cannot use WAL
        pass
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_writing: contextvars.ContextVar[bool] = contextvars.ContextVar("labsys_writing", default=False)


@event.listens_for(Engine, "begin")
def _sqlite_on_begin(connection: Any) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _writing.get() else "BEGIN")


@contextlib.contextmanager
def write_transaction(session: Any):
    """Start a fresh transaction meant to write. Any read transaction the session had open is
    ended first (its objects are reloaded on access, so they are read under the write lock).
    On SQLite the new transaction is BEGIN IMMEDIATE: writers queue instead of failing on a
    stale snapshot; readers (WAL) are never blocked. On PostgreSQL the transaction takes the
    audit-chain lock first, before any row lock: every write appends to the chain, so writers
    were serialized from their first flush anyway, and one lock order (chain, then rows) leaves
    no deadlock — a writer holding the chain lock and waiting for a row that another writer had
    updated before asking for the chain (found by the race soak, tests/reliability)."""
    session.rollback()
    token = _writing.set(True)
    try:
        # Begin now, while the flag is set; on PostgreSQL in a real transaction (reads run without one).
        lock_audit_chain(session.connection(execution_options=_transactional_options(session)))
        yield session
    finally:
        _writing.reset(token)


# PostgreSQL: the session reads outside any transaction, each statement on its own (autocommit),
# and writes in one (``write_transaction``). A transaction costs two round trips, BEGIN before the
# first statement and ROLLBACK when the connection goes back to the pool: a scan reads in two
# statements, so half its round trips were these (measured in-process on the volume data:
# 3.26 → 2.06 ms a scan). Under READ COMMITTED every statement already saw its own snapshot, so
# reads see what they saw before; nothing but ``write_transaction`` writes (regulated records
# refuse changes outside a unit of work), and it still runs in a transaction that holds the
# audit-chain lock and commits or rolls back as one. Django runs the same way by default.
_READ_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
READ_ISOLATION = {"isolation_level": "AUTOCOMMIT"}


def read_engine(engine: Engine) -> Engine:
    """The engine sessions read through: on PostgreSQL the same engine and pool with autocommit
    connections (SQLAlchemy's ``Engine.execution_options``; a connection's isolation level is
    reset when it returns to the pool), elsewhere the engine itself (SQLite reads begin in
    process, at no cost, and ``write_transaction`` needs its BEGIN IMMEDIATE)."""
    if engine.dialect.name != "postgresql":
        return engine
    reader = _READ_ENGINES.get(engine)
    if reader is None:
        reader = _READ_ENGINES[engine] = engine.execution_options(**READ_ISOLATION)
    return reader


def refuse_changes_outside_write_transactions(session: Any, flush_context: Any, instances: Any) -> None:
    """``before_flush``: on a read connection without a transaction each statement would commit
    as it runs, so a record changed outside ``write_transaction`` (none of labsys's services does)
    would be written piece by piece and without its audit entries. Refused instead, on
    PostgreSQL where reads run so; SQLite reads in a transaction that the request rolls back."""
    if not _writing.get() and session.get_bind().dialect.name == "postgresql":
        raise RuntimeError("a record changed outside write_transaction(): on PostgreSQL it would be "
                           "committed statement by statement; change it in unit_of_work()")


def _transactional_options(session: Any) -> dict[str, Any] | None:
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    return {"isolation_level": bind.dialect.default_isolation_level or "READ COMMITTED"}


AUDIT_LOCK_KEY = 7_240_011  # pg_advisory_xact_lock key serializing audit-chain appends


def lock_audit_chain(connection: Any) -> None:
    """Serialize appends to the audit chain until the transaction ends. SQLite already holds
    the database write lock (BEGIN IMMEDIATE); PostgreSQL takes a transaction advisory lock,
    keyed by the schema as well: each schema holds its own chain, so installations (or test
    databases) sharing one server never wait on each other's writers."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                           {"key": AUDIT_LOCK_KEY})


def read(statement: Any, parameters: dict[str, Any] | None = None) -> Any:
    """Run a select of plain columns on the ORM session's connection, inside its transaction,
    without the ORM's per-statement work (for a column select that is ≈ 0.1 ms of entity
    loading, result wrapping and event dispatch, about as much as the query itself on an indexed
    key). For read paths that want values, not records: pending ORM changes are not flushed
    first, so call it before changing records in the same transaction."""
    from labsys.extensions import db

    return db.session.connection().execute(statement, parameters)


def count_of(entity: Any) -> Any:
    """``SELECT count(*) FROM entity``, to be narrowed with ``.where()``. Written as ``count(*)``,
    not ``count(id)``: SQLite answers an unfiltered ``count(*)`` from the table's b-tree without
    reading a row, while ``count(id)`` reads every key (100,000 vials: 0.016 against 4.6 ms);
    PostgreSQL counts both the same way."""
    return select(func.count()).select_from(entity)
