"""The allocation list's seal: each entry's arm is encrypted (Fernet: AES-128-CBC + HMAC-SHA256)
with a key kept outside the database, so a database dump, a report query or a stray route cannot
read the arms. The plaintext binds the trial and the sequence number, so a sealed arm copied onto
another line fails to open."""
from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app

KEY_FILE = "trial_allocation.key"


def key_path() -> Path:
    return Path(current_app.instance_path) / KEY_FILE


def ensure_key(instance_path: str) -> None:
    """Create the key file once (mode 0600) unless the key comes from LABSYS_TRIAL_ALLOCATION_KEY."""
    if os.environ.get("LABSYS_TRIAL_ALLOCATION_KEY"):
        return
    path = Path(instance_path) / KEY_FILE
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key())


def _fernet() -> Fernet:
    key = current_app.config.get("TRIAL_ALLOCATION_KEY") or os.environ.get("LABSYS_TRIAL_ALLOCATION_KEY")
    if not key:
        key = _file_key(current_app.instance_path)
    return _fernet_of(key if isinstance(key, bytes) else key.encode())


@functools.lru_cache(maxsize=16)
def _fernet_of(key: bytes) -> Fernet:
    return Fernet(key)


_file_keys: dict[str, tuple[tuple[int, int, int], bytes]] = {}


def _file_key(instance_path: str) -> bytes:
    """The key file's key, read again only when the file is another (a dispensing check opens the
    patient's arm: reading the file on every call was a twentieth of the check). Plain ``os``
    calls: this runs on every dispensing check, and pathlib's objects cost more than the stat."""
    path = os.path.join(instance_path, KEY_FILE)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        ensure_key(instance_path)
        stat = os.stat(path)
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _file_keys.get(path)
    if cached is None or cached[0] != stamp:
        cached = _file_keys[path] = (stamp, Path(path).read_bytes().strip())
    return cached[1]


def seal_arm(trial_id: int, sequence: int, arm: str) -> str:
    return _fernet().encrypt(f"{trial_id}:{sequence}:{arm}".encode()).decode()


class SealBroken(Exception):
    """The sealed arm does not open with this key or belongs to another line."""


def open_arm(trial_id: int, sequence: int, sealed: str) -> str:
    plain = _opened(_fernet(), sealed)
    seal_trial, seal_sequence, arm = plain.split(":", 2)
    if int(seal_trial) != trial_id or int(seal_sequence) != sequence:
        raise SealBroken("the sealed arm belongs to another line of the list")
    return arm


@functools.lru_cache(maxsize=4096)
def _opened(fernet: Fernet, sealed: str) -> str:
    """A sealed arm's plaintext, remembered per key (the Fernet of one key is one object, see
    ``_fernet_of``): a token opens to the same text every time, and every dispensing check opens
    its patient's arm (≈ 4 % of the check). The process holds the key itself, so remembering
    what it opened adds nothing a memory dump would not already give; a token that does not
    open raises and is not remembered."""
    try:
        return fernet.decrypt(sealed.encode()).decode()
    except InvalidToken as error:
        raise SealBroken("the sealed arm cannot be opened with this key") from error


SEALED_RECORD_BLOCK = 512  # pad every sealed record to this size: both arms' records look alike


def seal_record(kind: str, binding: str, data: dict) -> str:
    """Seal arm-revealing details (a preparation, an AE's product link) so that neither the
    value nor its length tells cells from placebo. ``binding`` ties it to its row."""
    from labsys.db import canonical_json

    plain = canonical_json({"kind": kind, "bind": binding, "data": data}).encode()
    plain += b" " * (-len(plain) % SEALED_RECORD_BLOCK)
    return _fernet().encrypt(plain).decode()


def open_record(kind: str, binding: str, sealed: str) -> dict:
    import json

    try:
        content = json.loads(_fernet().decrypt(sealed.encode()).decode())
    except InvalidToken as error:
        raise SealBroken("the sealed record cannot be opened with this key") from error
    if content.get("kind") != kind or content.get("bind") != binding:
        raise SealBroken("the sealed record belongs to another row")
    return content["data"]
