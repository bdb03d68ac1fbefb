"""Pooled database connections: checked before use only after sitting idle, and a connection
that died while idle is replaced instead of failing the request (labsys.db.ping_idle_connections)."""
from __future__ import annotations

import contextlib

import pytest

from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from labsys.db import utcnow
from labsys.extensions import db


@contextlib.contextmanager
def pings(engine):
    original = engine.dialect.do_ping
    calls = []

    def counted(dbapi_connection):
        calls.append(1)
        return original(dbapi_connection)

    engine.dialect.do_ping = counted
    try:
        yield calls
    finally:
        engine.dialect.do_ping = original


def test_a_connection_in_steady_use_is_not_pinged_and_an_idle_one_is(app, client):
    app.config["DB_PING_IDLE_SECONDS"] = 10
    engine = db.engine
    db.session.remove()
    client.get("/healthz")  # the connection now sits in the pool, idle for a moment only
    with pings(engine) as calls:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert calls == []
        # Pretend every pooled connection has been idle for a minute.
        for record in list(engine.pool._pool.queue):
            record.info["labsys_idle_since"] -= 60
        assert client.get("/healthz").status_code == 200
        assert len(calls) == 1


def test_a_connection_that_died_while_idle_is_replaced(app, client, engine_name):
    engine = db.engine
    db.session.remove()
    assert client.get("/healthz").status_code == 200
    records = list(engine.pool._pool.queue)
    assert records
    if engine_name == "postgresql":  # the server ends the sessions (a restart, an idle timeout)
        pids = [record.dbapi_connection.info.backend_pid for record in records]
        outsider = create_engine(engine.url, poolclass=NullPool)  # not one of the pool's connections
        with outsider.connect() as other:
            for pid in pids:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        outsider.dispose()
    else:  # SQLite has no server: the connections are closed under the pool
        for record in records:
            record.dbapi_connection.close()
    for record in records:
        record.info["labsys_idle_since"] -= 60
    with pings(engine) as calls:
        response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["database"] == "ok"
    assert calls  # the dead connection was found by the check, not by the request


def _statement_is_its_own_transaction() -> bool:
    """PostgreSQL: now() is the transaction's start, statement_timestamp() this statement's."""
    return db.session.scalar(text("SELECT now() = statement_timestamp()"))


def test_postgresql_reads_without_a_transaction_and_writes_in_one(app, engine_name, demo_users):
    from labsys.db import write_transaction

    db.session.remove()
    db.session.execute(text("SELECT 1"))
    if engine_name == "postgresql":
        # No BEGIN before the reads, no ROLLBACK after them: each statement stands alone.
        assert _statement_is_its_own_transaction()
        assert db.session.connection().connection.dbapi_connection.autocommit is True
    name = db.session.scalar(text("SELECT full_name FROM users ORDER BY id LIMIT 1"))
    # A write is one transaction on both engines: the first change is undone with the second.
    try:
        with write_transaction(db.session):
            if engine_name == "postgresql":
                assert not _statement_is_its_own_transaction()
            db.session.execute(text("UPDATE users SET full_name = 'first change' WHERE id = (SELECT min(id) FROM users)"))
            db.session.execute(text("UPDATE users SET full_name = 'second change' WHERE id = (SELECT min(id) FROM users)"))
            raise RuntimeError("fails before its commit")
    except RuntimeError:
        db.session.rollback()
    assert db.session.scalar(text("SELECT full_name FROM users ORDER BY id LIMIT 1")) == name
    if engine_name == "postgresql":  # the pooled connection reads without a transaction again
        assert _statement_is_its_own_transaction()
        assert db.session.connection().connection.dbapi_connection.autocommit is True
        with db.engine.connect() as connection:  # the engine's other users (migrations) keep transactions
            assert connection.connection.dbapi_connection.autocommit is False


def test_a_record_changed_outside_a_write_transaction_is_refused_on_postgresql(app, engine_name, demo_users):
    """Not written statement by statement on a read connection: refused, and nothing changes."""
    from labsys.auth.models import UserSession  # not a regulated record: the audit guard lets it pass
    from labsys.db import write_transaction

    with write_transaction(db.session):
        db.session.add(UserSession(user_id=demo_users["qa"].id, token_hash="0" * 64,
                                   created_at=utcnow(), last_seen_at=utcnow()))
        db.session.commit()
    record = db.session.scalar(select(UserSession).where(UserSession.token_hash == "0" * 64))
    record.end_reason = "changed outside"
    if engine_name == "postgresql":
        with pytest.raises(RuntimeError, match="write_transaction"):
            db.session.flush()
    else:
        db.session.flush()  # SQLite: inside the read transaction, which is rolled back
    db.session.rollback()
    assert db.session.scalar(select(UserSession.end_reason).where(UserSession.token_hash == "0" * 64)) is None
