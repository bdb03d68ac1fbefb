"""Helpers for the hostile-input walks: URLs for every POST route filled from the demo data, and
a one-query fingerprint of what is stored (row counts of every table)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from flask import url_for
from sqlalchemy import func, select

from labsys.auth.roles import access_of
from labsys.extensions import db
from labsys.navigation import route_examples

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
# Audit actions that record a refused attempt on purpose (security events, 21 CFR 11.300).
SECURITY_EVENTS = {"login.failed", "login.refused", "signature.failed", "user.locked"}


def fuzz_examples(default: int) -> int:
    """LABSYS_FUZZ_EXAMPLES scales every hostile-input sweep (CI keeps the moderate default)."""
    return int(os.environ.get("LABSYS_FUZZ_EXAMPLES", default))


def post_routes(app, overrides: dict | None = None, fallback: int = 1):
    """(endpoint, url, access) for every rule accepting POST, its URL arguments taken from the demo
    data (first example value), or ``fallback`` where a feature names no example."""
    values = route_examples(app)
    values.update(overrides or {})
    routes = []
    with app.test_request_context():
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if "POST" not in rule.methods:
                continue
            arguments = {a: (values.get(a) or [fallback])[0] for a in rule.arguments}
            routes.append((rule.endpoint, url_for(rule.endpoint, **arguments),
                           access_of(app.view_functions[rule.endpoint])))
    return routes


def stored_counts() -> dict[str, int]:
    """Row count of every table, in one query."""
    tables = db.metadata.sorted_tables
    row = db.session.execute(select(*[select(func.count()).select_from(t).scalar_subquery().label(t.name)
                                      for t in tables])).one()
    db.session.rollback()
    return dict(zip([t.name for t in tables], row))


def regulated_writes(before: dict[str, int], after: dict[str, int], audit_since: int) -> dict:
    """What changed between two fingerprints, leaving out the audit entries of security events
    (failed sign-ins and signatures are recorded on purpose) and the sessions/counters they move
    (``audit_counts``: the trigger-kept totals of those same entries)."""
    from labsys.audit.models import AuditEntry

    changed = {name: after[name] - before[name] for name in before
               if after[name] != before[name] and name not in {"audit_entries", "audit_counts", "user_sessions"}}
    entries = db.session.scalars(select(AuditEntry.action).where(AuditEntry.id > audit_since)).all()
    db.session.rollback()
    other = [a for a in entries if a not in SECURITY_EVENTS]
    if other:
        changed["audit_entries"] = other
    return changed


def last_audit_id() -> int:
    from labsys.audit.models import AuditEntry

    value = db.session.scalar(select(func.max(AuditEntry.id))) or 0
    db.session.rollback()
    return value


def write_figures(name: str, figures: dict) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path
