"""The append-only, hash-chained audit trail (21 CFR 11.10(e), EU GMP Annex 11 §9)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from labsys.audit.counts import keep_counts
from labsys.audit.guards import make_append_only
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db

GENESIS_HASH = "0" * 64


class AuditEntry(db.Model):
    """One entry of the chain. Never updated or deleted (database triggers refuse it)."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_entity", "entity_type", "entity_id"),
        Index("ix_audit_entries_recorded_at", "recorded_at"),
        # The trail filtered by record type, newest first, without sorting the type's entries.
        Index("ix_audit_entries_entity_type_seq", "entity_type", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(80), index=True)
    entity_type: Mapped[str] = mapped_column(String(80))
    entity_id: Mapped[str | None] = mapped_column(String(80))
    old_values: Mapped[str | None] = mapped_column(Text)  # canonical JSON
    new_values: Mapped[str | None] = mapped_column(Text)  # canonical JSON
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

make_append_only(AuditEntry.__table__)
keep_counts(AuditEntry.__table__)


class AuditCount(db.Model):
    """How many entries of the trail have this record type and action: kept by a trigger on
    ``audit_entries`` (labsys.audit.counts) in the transaction of each entry, never by the app."""

    __tablename__ = "audit_counts"

    entity_type: Mapped[str] = mapped_column(String(80), primary_key=True)
    action: Mapped[str] = mapped_column(String(80), primary_key=True)
    entries: Mapped[int] = mapped_column(BigInteger)
