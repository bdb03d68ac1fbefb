"""Short, versioned, Ed25519-signed payloads for QR codes on vials, boxes, wristbands and
certificates.

    LS1.<KIND>.<IDENTIFIER>.<KEY ID>.<SIGNATURE>

``LS1`` is the format version; KIND is VIAL, BOX, PATIENT or CERT; the key id is the first 8 hex
digits (upper case) of the SHA-256 of the raw public key; the signature is Ed25519 over the text
before the last dot, in unpadded RFC 4648 base32. Every character is in the QR alphanumeric set
(0-9, A-Z, ``.``, ``-``), so the code stays small. A payload never holds a name or the arm.

Verification needs only public keys, so a scanner holding the public key can check labels
offline; ``verify`` never raises, whatever bytes it is given.

A keyring remembers the payloads it has found valid (the last ``VERIFIED_CACHE_SIZE``): whether a
signature holds depends only on the payload and the keyring's public keys, so a code scanned again
(a vial checked, then dispensed, then checked at the bedside) is not verified again; an Ed25519
verification costs ≈ 0.1 ms, a third of a dispensing check's own work. Only valid verdicts are
kept (a forged or garbled code is checked every time and cannot push real ones out), and a
keyring with other keys is another keyring, with its own memory."""
from __future__ import annotations

import base64
import binascii
import hashlib
import functools
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = "LS1"
KINDS = {"vial": "VIAL", "box": "BOX", "patient": "PATIENT", "certificate": "CERT"}
KIND_NAMES = {code: name for name, code in KINDS.items()}
IDENTIFIER_PATTERN = re.compile(r"^[0-9A-Z][0-9A-Z-]{0,39}$")
PAYLOAD_PATTERN = re.compile(
    r"^LS1\.(VIAL|BOX|PATIENT|CERT)\.([0-9A-Z][0-9A-Z-]{0,39})\.([0-9A-F]{8})\.([A-Z2-7]{103})$")
MAX_PAYLOAD_LENGTH = 200
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Verdict:
    """What a scanned payload says and whether its signature holds."""

    kind: str | None
    identifier: str | None
    key_id: str | None
    valid: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:8].upper()


def _b32(signature: bytes) -> str:
    return base64.b32encode(signature).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


class _Refused(Exception):
    """An invalid verdict, raised past the keyring's memory so that it is not remembered."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


class Keyring:
    """Public keys by key id (verification) and optionally the private key (signing)."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None,
                 public_keys: Iterable[Ed25519PublicKey] = (), verified_cache_size: int = VERIFIED_CACHE_SIZE):
        self.private_key = private_key
        # functools' LRU (thread-safe); a refused payload raises through it and is not kept.
        self._remembered = functools.lru_cache(maxsize=verified_cache_size)(self._valid_only)
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        for key in public_keys:
            self.public_keys[key_id_of(key)] = key
        if private_key is not None:
            self.public_keys[key_id_of(private_key.public_key())] = private_key.public_key()

    @property
    def key_id(self) -> str:
        if self.private_key is None:
            raise ValueError("this keyring holds no private key: it can verify but not sign")
        return key_id_of(self.private_key.public_key())

    def public_key_pem(self) -> bytes:
        if self.private_key is None:
            raise ValueError("no private key")
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def encode(self, kind: str, identifier: str) -> str:
        """The signed payload for ``kind`` (vial, box, patient, certificate) and ``identifier``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")
        identifier = identifier.upper()
        if not IDENTIFIER_PATTERN.match(identifier):
            raise ValueError("identifiers are 1-40 characters of 0-9, A-Z and '-'")
        body = f"{VERSION}.{KINDS[kind]}.{identifier}.{self.key_id}"
        return f"{body}.{_b32(self.private_key.sign(body.encode('ascii')))}"  # type: ignore[union-attr]

    def verify(self, payload: object) -> Verdict:
        """Check a payload; returns a Verdict and never raises."""
        try:
            return self._remembered(payload) if type(payload) is str else self._verify(payload)
        except _Refused as refused:
            return refused.verdict
        except Exception as error:  # defensive: arbitrary input must never crash a scanner
            return Verdict(None, None, None, False, f"unreadable payload ({type(error).__name__})")

    def _valid_only(self, payload: str) -> Verdict:
        verdict = self._verify(payload)
        if not verdict.valid:
            raise _Refused(verdict)
        return verdict

    def _verify(self, payload: object) -> Verdict:
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("ascii")
            except UnicodeDecodeError:
                return Verdict(None, None, None, False, "not text")
        if not isinstance(payload, str):
            return Verdict(None, None, None, False, "not text")
        payload = payload.strip()
        if len(payload) > MAX_PAYLOAD_LENGTH:
            return Verdict(None, None, None, False, "too long")
        if not payload.startswith(VERSION + "."):
            return Verdict(None, None, None, False, "not a labsys payload or unknown version")
        match = PAYLOAD_PATTERN.match(payload)
        if not match:
            return Verdict(None, None, None, False, "malformed payload")
        kind_code, identifier, key_id, signature_text = match.groups()
        kind = KIND_NAMES[kind_code]
        public_key = self.public_keys.get(key_id)
        if public_key is None:
            return Verdict(kind, identifier, key_id, False, "unknown signing key")
        try:
            signature = _unb32(signature_text)
        except (binascii.Error, ValueError):
            return Verdict(kind, identifier, key_id, False, "malformed signature")
        if len(signature) != 64 or _b32(signature) != signature_text:
            return Verdict(kind, identifier, key_id, False, "malformed signature")
        body = payload[: payload.rindex(".")]
        try:
            public_key.verify(signature, body.encode("ascii"))
        except InvalidSignature:
            return Verdict(kind, identifier, key_id, False, "signature does not hold")
        return Verdict(kind, identifier, key_id, True, "signature holds")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def generate_private_key_file(path: Path) -> Ed25519PrivateKey:
    """Create a new key file readable by its owner only (done once per installation)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key


def _key_file_name(instance_path: str | Path | None) -> str:
    """The key file's path as normalised text (os.path: this runs on every scan, and pathlib's
    objects cost ≈ 15 µs more)."""
    configured = os.environ.get("LABSYS_SIGNING_KEY_FILE")
    if configured:
        return os.path.normpath(configured)
    if instance_path is None:
        from flask import current_app

        instance_path = current_app.instance_path
    return os.path.normpath(os.path.join(instance_path, "signing_key.pem"))


def key_file_path(instance_path: str | Path | None = None) -> Path:
    return Path(_key_file_name(instance_path))


_keyrings: dict[str, Keyring] = {}


def app_keyring(instance_path: str | Path | None = None) -> Keyring:
    """The installation's keyring: the private key from LABSYS_SIGNING_KEY_FILE, or one generated
    once into instance/signing_key.pem; plus any extra public keys (retired keys still on labels)
    in ``public_keys/*.pem`` beside it."""
    name = _key_file_name(instance_path)
    cached = _keyrings.get(name)
    if cached is not None:
        return cached
    path = Path(name)
    if path.exists():
        private_key = load_private_key(path)
    else:
        try:
            private_key = generate_private_key_file(path)
        except FileExistsError:  # another worker created it first
            private_key = load_private_key(path)
    extra = [load_public_key(p.read_bytes()) for p in sorted((path.parent / "public_keys").glob("*.pem"))]
    keyring = Keyring(private_key, extra)
    _keyrings[name] = keyring
    return keyring


def encode(kind: str, identifier: str) -> str:
    return app_keyring().encode(kind, identifier)


def verify(payload: object) -> Verdict:
    try:
        keyring = app_keyring()
    except Exception as error:
        return Verdict(None, None, None, False, f"no verification key ({type(error).__name__})")
    return keyring.verify(payload)
