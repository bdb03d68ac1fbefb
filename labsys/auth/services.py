"""User administration, sign-in with lockout, and server-side sessions.

Passwords are hashed with argon2id. Admins create and deactivate users but never choose a
password: a new or reset account gets a random one-time password that must be changed at the
next sign-in."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import joinedload

from labsys.audit.services import Actor, record_event, unit_of_work
from labsys.auth.models import ApiCaller, ApiToken, User, UserRole, UserSession
from labsys.auth.roles import Role
from labsys.db import read, utcnow, write_transaction
from labsys.errors import NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _

_hashers: dict[tuple[int, int], PasswordHasher] = {}


def _hasher() -> PasswordHasher:
    """argon2id with the configured cost (tests lower it; production keeps the library default)."""
    key = (current_app.config["ARGON2_TIME_COST"], current_app.config["ARGON2_MEMORY_KIB"])
    if key not in _hashers:
        _hashers[key] = PasswordHasher(time_cost=key[0], memory_cost=key[1])
    return _hashers[key]
USERNAME_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


def actor_of(user: User) -> Actor:
    return Actor(user.id, f"{user.full_name} ({user.username})")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


_DUMMY_HASHES: dict[tuple[int, int], str] = {}


def password_matches(user: User | None, password: str) -> bool:
    """Verify a password; for an unknown user verify against a dummy so timing reveals nothing."""
    if user is None:
        key = (current_app.config["ARGON2_TIME_COST"], current_app.config["ARGON2_MEMORY_KIB"])
        target = _DUMMY_HASHES.setdefault(key, hash_password("labsys-dummy-password"))
    else:
        target = user.password_hash
    try:
        return _hasher().verify(target, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def password_problems(password: str, username: str) -> list[str]:
    """Password rules (21 CFR 11.300): minimum length, not the user ID."""
    problems = []
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        problems.append(_("The password must have at least %(n)d characters.", n=minimum))
    if username.lower() in password.lower():
        problems.append(_("The password must not contain the user ID."))
    return problems


def get_user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(_("No such user."))
    return user


def find_user(username: str) -> User | None:
    return db.session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))


def create_user(admin: Actor, username: str, full_name: str, roles: Iterable[Role | str],
                password: str | None = None, must_change_password: bool = True) -> tuple[User, str]:
    """Create a user with roles; returns the user and the one-time password to hand over."""
    username = username.strip().lower()
    roles = sorted({Role(r) for r in roles}, key=lambda r: r.value)
    problems = []
    if not USERNAME_PATTERN.match(username):
        problems.append(_("User ID: 2–64 lower-case letters, digits, dot, dash or underscore, starting with a letter."))
    if not full_name.strip():
        problems.append(_("Full name is required (it is printed on signatures)."))
    if not roles:
        problems.append(_("Give the user at least one role."))
    if find_user(username) is not None:
        problems.append(_("User ID %(u)s is taken; IDs are never reused.", u=username))
    if problems:
        raise RuleViolation(_("The user was not created."), problems)
    password = password or one_time_password()
    with unit_of_work(admin, "user.create"):
        user = User(username=username, full_name=full_name.strip(),
                    password_hash=hash_password(password),
                    must_change_password=must_change_password,
                    password_changed_at=None if must_change_password else utcnow())
        user.roles = [UserRole(role=r) for r in roles]
        db.session.add(user)
    return user, password


def set_roles(admin: Actor, user: User, roles: Iterable[Role | str]) -> None:
    wanted = {Role(r) for r in roles}
    if not wanted:
        raise RuleViolation(_("Give the user at least one role."), [_("roles: at least one")])
    with unit_of_work(admin, "user.roles"):
        record_event(admin, "user.roles", "users", user.id,
                     {"roles": sorted(r.value for r in wanted)},
                     old={"roles": sorted(r.value for r in user.role_set)})
        # Roles taken away are marked revoked (UserRole rows are regulated: never deleted or
        # orphaned); a role given back is the same row, revoked no more.
        now = utcnow()
        held = {r.role: r for r in user.roles}
        for role, row in held.items():
            if role not in wanted and row.revoked_at is None:
                row.revoked_at = now
            elif role in wanted and row.revoked_at is not None:
                row.revoked_at = None
        user.roles.extend(UserRole(role=r) for r in sorted(wanted - held.keys(), key=lambda r: r.value))


def deactivate_user(admin: Actor, user: User, reason: str) -> None:
    """Deactivate (never delete) a user and end all their sessions at once."""
    if admin.user_id == user.id:
        raise RuleViolation(_("You cannot deactivate yourself."))
    with unit_of_work(admin, "user.deactivate", reason, reason_required=True):
        user.active = False
        _end_sessions(user.id, "deactivated")


def reactivate_user(admin: Actor, user: User, reason: str) -> None:
    with unit_of_work(admin, "user.reactivate", reason, reason_required=True):
        user.active = True


def unlock_user(admin: Actor, user: User, reason: str) -> str:
    """Unlock a locked account; a new one-time password is issued for the user to change."""
    password = one_time_password()
    with unit_of_work(admin, "user.unlock", reason, reason_required=True):
        user.locked_at = None
        user.failed_logins = 0
        user.password_hash = hash_password(password)
        user.must_change_password = True
    return password


def issue_one_time_password(admin: Actor, user: User, reason: str) -> str:
    """Reset a forgotten password: the admin hands over a random one-time password and never
    learns the one the user then chooses."""
    password = one_time_password()
    with unit_of_work(admin, "user.password_reset", reason, reason_required=True):
        user.password_hash = hash_password(password)
        user.must_change_password = True
        _end_sessions(user.id, "password reset")
    return password


def change_password(user: User, current_password: str, new_password: str) -> None:
    problems = []
    if not password_matches(user, current_password):
        problems.append(_("The current password is wrong."))
    problems += password_problems(new_password, user.username)
    if current_password == new_password:
        problems.append(_("The new password must differ from the current one."))
    if problems:
        raise RuleViolation(_("The password was not changed."), problems)
    with unit_of_work(actor_of(user), "user.password_change"):
        user.password_hash = hash_password(new_password)
        user.must_change_password = False
        user.password_changed_at = utcnow()


def password_change_due(user: User) -> bool:
    """A one-time password, or (when LABSYS_PASSWORD_MAX_AGE_DAYS is set) an old password."""
    if user.must_change_password:
        return True
    max_age = current_app.config["PASSWORD_MAX_AGE_DAYS"]
    if max_age and user.password_changed_at is not None:
        return utcnow() - user.password_changed_at > dt.timedelta(days=max_age)
    return False


def set_locale(user: User, locale: str) -> None:
    if locale not in current_app.config["LANGUAGES"]:
        raise RuleViolation(_("Unknown language."))
    with unit_of_work(actor_of(user), "user.language"):
        user.locale = locale


@dataclass
class LoginOutcome:
    user: User | None
    token: str | None
    message: str | None


def register_failure(user: User, action: str) -> bool:
    """Count a failed password (at sign-in or signing); lock at the threshold. Returns locked."""
    threshold = current_app.config["LOCKOUT_THRESHOLD"]
    with unit_of_work(actor_of(user), action):
        user.failed_logins = (user.failed_logins or 0) + 1
        locked = user.failed_logins >= threshold and user.locked_at is None
        if locked:
            user.locked_at = utcnow()
            _end_sessions(user.id, "locked")
            record_event(Actor.system(), "user.locked", "users", user.id,
                         {"failed_attempts": user.failed_logins, "threshold": threshold})
    return user.locked_at is not None


def login(username: str, password: str, remote_addr: str | None) -> LoginOutcome:
    """Check the credentials; on success open a server-side session and return its token."""
    user = find_user(username)
    generic = _("Wrong user ID or password.")
    if user is None:
        password_matches(None, password)
        with unit_of_work(Actor.system(), "login.failed"):
            record_event(Actor.system(), "login.failed", "users", None,
                         {"username": username[:64], "remote_addr": remote_addr, "why": "unknown user"})
        return LoginOutcome(None, None, generic)
    if user.is_locked:
        with unit_of_work(actor_of(user), "login.refused"):
            record_event(actor_of(user), "login.refused", "users", user.id, {"why": "locked"})
        return LoginOutcome(None, None, _("This account is locked after too many failed attempts. Ask an administrator to unlock it."))
    if not password_matches(user, password):
        locked = register_failure(user, "login.failed")
        if locked:
            return LoginOutcome(None, None, _("This account is locked after too many failed attempts. Ask an administrator to unlock it."))
        return LoginOutcome(None, None, generic)
    if not user.active:
        with unit_of_work(actor_of(user), "login.refused"):
            record_event(actor_of(user), "login.refused", "users", user.id, {"why": "deactivated"})
        return LoginOutcome(None, None, _("This account is deactivated."))
    token = secrets.token_urlsafe(32)
    with unit_of_work(actor_of(user), "login"):
        user.failed_logins = 0
        db.session.add(UserSession(token_hash=_token_hash(token), user_id=user.id,
                                   remote_addr=remote_addr))
        record_event(actor_of(user), "login", "users", user.id, {"remote_addr": remote_addr})
    user.session_token = token
    return LoginOutcome(user, token, None)


def logout(user: User, token: str | None) -> None:
    with unit_of_work(actor_of(user), "logout"):
        if token:
            db.session.execute(update(UserSession).where(
                UserSession.token_hash == _token_hash(token), UserSession.ended_at.is_(None)
            ).values(ended_at=utcnow(), end_reason="logout"))
        record_event(actor_of(user), "logout", "users", user.id)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _end_sessions(user_id: int, reason: str) -> None:
    db.session.execute(update(UserSession).where(
        UserSession.user_id == user_id, UserSession.ended_at.is_(None)
    ).values(ended_at=utcnow(), end_reason=reason))


SEEN_WRITE_INTERVAL = dt.timedelta(seconds=30)

# Every request loads its user through one of these: one statement each (the session or token,
# its user and the user's roles), built once per process.
_SESSION_WITH_USER = (select(UserSession).where(UserSession.token_hash == bindparam("token_hash"))
                      .options(joinedload(UserSession.user).joinedload(User.roles)))
# The token, its user and each of the user's roles, as plain columns (one row per role).
_TOKEN_CALLER = (select(ApiToken.id.label("token_id"), ApiToken.revoked_at.label("token_revoked_at"),
                        ApiToken.last_used_at, User.id, User.username, User.full_name, User.locale, User.active,
                        User.locked_at, User.must_change_password, User.password_changed_at, UserRole.role,
                        UserRole.revoked_at.label("role_revoked_at"))
                 .join(User, User.id == ApiToken.user_id).outerjoin(UserRole, UserRole.user_id == User.id)
                 .where(ApiToken.token_hash == bindparam("token_hash")))


def load_session_user(token: str) -> User | None:
    """Flask-Login's loader: the user behind a live session, or None (ended, idle, inactive)."""
    record = db.session.execute(_SESSION_WITH_USER, {"token_hash": _token_hash(token)}).unique().scalar_one_or_none()
    if record is None or record.ended_at is not None:
        return None
    now = utcnow()
    idle_limit = dt.timedelta(minutes=current_app.config["IDLE_TIMEOUT_MINUTES"])
    user = record.user
    if now - record.last_seen_at > idle_limit:
        _touch_session(record.id, ended_at=now, end_reason="idle timeout")
        return None
    if now - record.created_at > current_app.config["PERMANENT_SESSION_LIFETIME"]:
        _touch_session(record.id, ended_at=now, end_reason="maximum lifetime")
        return None
    if not user.may_act:
        return None
    if now - record.last_seen_at > SEEN_WRITE_INTERVAL:
        _touch_session(record.id, last_seen_at=now)
        user = db.session.get(User, record.user_id)
    user.session_token = token
    return user


def _touch_session(session_id: int, **values) -> None:
    """Session bookkeeping (not a regulated record) in its own short write transaction."""
    with write_transaction(db.session):
        db.session.execute(update(UserSession).where(UserSession.id == session_id).values(**values))
        db.session.commit()


API_TOKEN_PREFIX = "lsk_"


def create_api_token(user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token for the user's own scanner or script; returns it once, in clear."""
    name = name.strip()
    if not name or len(name) > 80:
        raise RuleViolation(_("Name the token (where it is used), up to 80 characters."),
                            [_("Name the token (where it is used), up to 80 characters.")], field="name")
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with unit_of_work(actor_of(user), "api_token.create"):
        token = ApiToken(user_id=user.id, name=name, prefix=secret[:12], token_hash=_token_hash(secret))
        db.session.add(token)
    return token, secret


def revoke_api_token(user: User, token_id: int) -> None:
    token = db.session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound(_("No such token."))
    if token.revoked_at is not None:
        raise RuleViolation(_("This token is already revoked."))
    with unit_of_work(actor_of(user), "api_token.revoke"):
        token.revoked_at = utcnow()


def tokens_of(user: User) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                   .order_by(ApiToken.created_at.desc())))


def load_token_user(secret: str) -> ApiCaller | None:
    """The active user behind a live API token (as an ApiCaller), or None: the same checks as
    ever (token revoked, user inactive, locked or due a password change), on every call."""
    if not secret.startswith(API_TOKEN_PREFIX):
        return None
    rows = read(_TOKEN_CALLER, {"token_hash": _token_hash(secret)}).all()
    if not rows or rows[0].token_revoked_at is not None:
        return None
    row = rows[0]
    caller = ApiCaller(row.id, row.username, row.full_name, row.locale,
                       frozenset(r.role for r in rows if r.role is not None and r.role_revoked_at is None),
                       row.active, row.locked_at, row.must_change_password, row.password_changed_at)
    if not caller.may_act or password_change_due(caller):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > SEEN_WRITE_INTERVAL:
        with write_transaction(db.session):
            db.session.execute(update(ApiToken).where(ApiToken.id == row.token_id).values(last_used_at=now))
            db.session.commit()
    return caller
