"""Settings, read from environment variables with the prefix ``LABSYS_``.

Every setting has a safe default so that ``make run`` works on a fresh machine; production
deployments override them (see README.md, "Configuration").
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
INSTANCE_DIR = Path(os.environ.get("LABSYS_INSTANCE_PATH", BASE_DIR / "instance"))


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"LABSYS_{name}", default)


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))  # type: ignore[arg-type]


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """Use LABSYS_SECRET_KEY, or a key kept in instance/secret_key so sessions survive restarts."""
    key = _env("SECRET_KEY")
    if key:
        return key
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


class Config:
    """Default configuration; each attribute documents one ``LABSYS_`` variable."""

    SECRET_KEY = _secret_key()
    SQLALCHEMY_DATABASE_URI = _env("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'labsys.db'}")
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    # A pooled connection idle this long is checked before use (labsys.db.ping_idle_connections).
    DB_PING_IDLE_SECONDS = _env_int("DB_PING_IDLE_SECONDS", 10)
    # Login and session security (21 CFR 11.300, OWASP ASVS).
    LOCKOUT_THRESHOLD = _env_int("LOCKOUT_THRESHOLD", 5)
    LOGIN_RATE_LIMIT = _env("LOGIN_RATE_LIMIT", "20 per minute")
    IDLE_TIMEOUT_MINUTES = _env_int("IDLE_TIMEOUT_MINUTES", 15)
    PASSWORD_MIN_LENGTH = _env_int("PASSWORD_MIN_LENGTH", 10)
    ARGON2_TIME_COST = _env_int("ARGON2_TIME_COST", 3)
    ARGON2_MEMORY_KIB = _env_int("ARGON2_MEMORY_KIB", 65536)
    PASSWORD_MAX_AGE_DAYS = _env_int("PASSWORD_MAX_AGE_DAYS", 0)  # 0 = no forced rotation
    PERMANENT_SESSION_LIFETIME = timedelta(hours=_env_int("SESSION_MAX_HOURS", 12))
    # The absolute lifetime counts from sign-in: the server ends the session then (and at the
    # idle timeout), and the cookie keeps the expiry it got at sign-in instead of being signed
    # and sent again with every response.
    SESSION_REFRESH_EACH_REQUEST = False
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SECURE_COOKIES", False)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PREFERRED_URL_SCHEME = _env("URL_SCHEME", "http")
    WTF_CSRF_TIME_LIMIT = None  # the session's own lifetime bounds the token
    RATELIMIT_STORAGE_URI = _env("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_ENABLED = _env_bool("RATELIMIT_ENABLED", True)
    # Internationalisation: the lab is in Shanghai.
    BABEL_DEFAULT_LOCALE = _env("DEFAULT_LOCALE", "en")
    BABEL_DEFAULT_TIMEZONE = "UTC"
    LANGUAGES = {"en": "English", "zh_CN": "简体中文"}
    LAB_TIMEZONE = _env("LAB_TIMEZONE", "Asia/Shanghai")
    # Domain defaults (each can be overridden per site).
    FACILITY_CODE = _env("FACILITY_CODE", "W0000")
    DEMO_PASSWORD = _env("DEMO_PASSWORD")
    MAX_UPLOAD_MB = _env_int("MAX_UPLOAD_MB", 256)
    MAX_CONTENT_LENGTH = MAX_UPLOAD_MB * 1024 * 1024
    HUEY_URL = _env("HUEY_URL")  # redis://… in production; SQLite file under instance/ otherwise
    PAGE_SIZE = _env_int("PAGE_SIZE", 25)


class TestConfig(Config):
    TESTING = True
    RATELIMIT_ENABLED = False
    # Real argon2id at a lower cost, so hundreds of tests can sign in quickly.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_KIB = 1024
