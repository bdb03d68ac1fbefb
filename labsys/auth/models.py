"""Users, their roles, server-side sessions and electronic signatures (21 CFR Part 11)."""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from flask_login import UserMixin
from sqlalchemy import Boolean, CheckConstraint, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.guards import make_append_only
from labsys.audit.services import Audited
from labsys.auth.roles import ROLE_PERMISSIONS, Permission, Role
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db


def enum_column(enum_class: type[enum.Enum], name: str) -> Enum:
    """Store an enum by value, with a CHECK constraint on both engines."""
    return Enum(enum_class, name=name, native_enum=False, create_constraint=True,
                values_callable=lambda e: [member.value for member in e], length=40,
                validate_strings=True)


class Principal:
    """What a user record and an API caller share: roles, permissions and standing, from
    ``role_set``, ``active`` and ``locked_at``."""

    role_set: frozenset[Role]
    active: bool
    locked_at: dt.datetime | None

    def has_role(self, *roles: Role | str) -> bool:
        return bool(self.role_set & {Role(r) for r in roles})

    def can(self, permission: Permission) -> bool:
        return any(permission in ROLE_PERMISSIONS[role] for role in self.role_set)

    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None

    @property
    def may_act(self) -> bool:
        """Active and not locked: may sign in, use a token, sign or witness."""
        return self.active and not self.is_locked


class User(Principal, Audited, UserMixin, db.Model):
    """A person with a unique, never reassigned user ID (21 CFR 11.100). Never deleted."""

    __tablename__ = "users"
    __audit_mask__ = ("password_hash",)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    locale: Mapped[str] = mapped_column(String(10), default="en")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    roles: Mapped[list["UserRole"]] = relationship(back_populates="user", cascade="all",
                                                   lazy="selectin", order_by="UserRole.role")

    # Flask-Login stores the server-side session token, not the user id.
    session_token = None  # set per request, never stored

    def get_id(self) -> str | None:
        return self.session_token

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    @property
    def role_set(self) -> frozenset[Role]:  # type: ignore[override]
        return frozenset(r.role for r in self.roles if r.revoked_at is None)

    def __repr__(self) -> str:
        return f"<User {self.username}>"


@dataclass(frozen=True, eq=False)
class ApiCaller(Principal, UserMixin):
    """The user an API token speaks for, as the plain values read with the token, not a User
    record: ``current_user`` of a call with ``Authorization: Bearer``. Tokens open only /api/
    routes, and those only read (scan, dispensing check, patient and run look-ups); loading the
    token, its user and the roles as three ORM entities cost every call ≈ 0.4 ms on PostgreSQL,
    a sixth of a scan."""

    id: int
    username: str
    full_name: str
    locale: str
    role_set: frozenset[Role]
    active: bool
    locked_at: dt.datetime | None
    must_change_password: bool
    password_changed_at: dt.datetime | None

    def get_id(self) -> None:
        return None  # nothing of a token call goes into a session

    def __repr__(self) -> str:
        return f"<ApiCaller {self.username}>"


class UserRole(Audited, db.Model):
    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    # A role taken away is marked, never deleted (regulated records are never deleted).
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    user: Mapped[User] = relationship(back_populates="roles")


class UserSession(db.Model):
    """A server-side session: ending it here signs the browser out, whatever its cookie says."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(40))
    remote_addr: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class SignatureMeaning(str, enum.Enum):
    AUTHORED = "authored"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    VERIFIED = "verified"
    RELEASED = "released"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    WITNESSED = "witnessed"
    ADMINISTERED = "administered"


class Signature(Audited, db.Model):
    """An electronic signature, permanently linked to the exact version of the record signed
    (21 CFR 11.50, 11.70). Append-only: triggers refuse UPDATE and DELETE."""

    __tablename__ = "signatures"
    __table_args__ = (
        CheckConstraint("length(record_hash) = 64", name="record_hash_is_sha256"),
        db.Index("ix_signatures_entity", "entity_type", "entity_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[SignatureMeaning] = mapped_column(enum_column(SignatureMeaning, "signature_meaning"))
    signed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    entity_type: Mapped[str] = mapped_column(String(80))
    entity_id: Mapped[str] = mapped_column(String(80))
    record_hash: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)

    signer: Mapped[User] = relationship()


make_append_only(Signature.__table__)


class ApiToken(Audited, db.Model):
    """A per-user token for scanners and scripts (``Authorization: Bearer <token>``). Only its
    SHA-256 is stored; the token is shown once at creation. Revoked, never deleted."""

    __tablename__ = "api_tokens"
    __audit_exclude__ = ("last_used_at",)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()
