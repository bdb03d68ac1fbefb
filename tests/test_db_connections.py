"""Pooled database connections: checked before use only after sitting idle, and a connection
that died while idle is replaced instead of failing the request (labsys.db.ping_idle_connections)."""
from __future__ import annotations

import contextlib

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

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
