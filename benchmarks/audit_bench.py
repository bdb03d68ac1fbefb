"""Audit-trail benchmark: `audit verify` over N entries, and the cost of one append as the
chain grows (it must stay O(1): the head is read through the unique index on seq).

    .venv/bin/python benchmarks/audit_bench.py --entries 1000000 [--database-url URL]

Fills a fresh database (SQLite file by default) with N chained entries through the same hashing
code the app uses, then times verification and appends at 10k and at N entries."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from labsys import create_app  # noqa: E402
from labsys.audit.models import GENESIS_HASH, AuditEntry  # noqa: E402
from labsys.audit.services import HASHED_COLUMNS, Actor, entry_hash, iso_utc, record_event, unit_of_work, verify_chain  # noqa: E402
from labsys.db import canonical_json  # noqa: E402
from labsys.extensions import db  # noqa: E402
from labsys.perfdata import write_audit_rows  # noqa: E402


def fill(target: int, batch: int = 20000) -> None:
    head = db.session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq, prev = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    start = dt.datetime(2016, 1, 1, tzinfo=dt.timezone.utc)
    while seq < target:
        rows = []
        for _ in range(min(batch, target - seq)):
            seq += 1
            at = start + dt.timedelta(seconds=seq * 300)
            new = canonical_json({"status": "quarantine", "viable_cells_per_vial": 50_000_000 + seq % 997})
            values = (seq, iso_utc(at), 1 + seq % 8, "Li Na (technician)", "vial.update", "vials",
                      str(seq), None, new, None, prev)
            prev = entry_hash(values)
            row = dict(zip(HASHED_COLUMNS, values))
            row.update(recorded_at=at, hash=prev)
            rows.append(row)
        with db.engine.begin() as connection:
            write_audit_rows(connection, rows)


def time_appends(n: int = 200) -> list[float]:
    times = []
    actor = Actor.system("bench")
    for i in range(n):
        t0 = time.perf_counter()
        with unit_of_work(actor, "bench.append"):
            record_event(actor, "bench.append", "bench", i, {"i": i})
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="labsys-audit-bench-")
    url = args.database_url or f"sqlite:///{scratch}/bench.db"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        db.drop_all() if args.database_url else None
        if args.database_url:
            with db.engine.begin() as connection:
                connection.execute(text("DROP FUNCTION IF EXISTS labsys_refuse_change() CASCADE"))
        db.create_all()
        print(f"engine: {db.engine.dialect.name}")
        for size in sorted({10_000, args.entries}):
            t0 = time.perf_counter()
            fill(size)
            print(f"filled to {size:,} entries in {time.perf_counter() - t0:.1f} s")
            appends = time_appends()
            print(f"append at {size:,}: median {statistics.median(appends):.2f} ms, "
                  f"p95 {sorted(appends)[int(len(appends) * 0.95)]:.2f} ms")
            db.session.rollback()
            t0 = time.perf_counter()
            result = verify_chain(db.session)
            elapsed = time.perf_counter() - t0
            count = db.session.scalar(select(func.count()).select_from(AuditEntry))
            print(f"verify {count:,} entries: {elapsed:.2f} s ({'OK' if result.ok else 'BROKEN'}), "
                  f"{count / elapsed:,.0f} entries/s")


if __name__ == "__main__":
    main()
