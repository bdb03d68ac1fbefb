"""The signed QR payload codec: good payloads verify; forged, altered, malformed or random input
never verifies and never raises."""
import os
import random
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labsys.documents import codec
from labsys.documents.codec import Keyring, key_id_of


@pytest.fixture(scope="module")
def keyring():
    return Keyring(Ed25519PrivateKey.generate())


def test_a_good_payload_verifies_and_names_kind_identifier_and_key(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    verdict = keyring.verify(payload)
    assert verdict.valid and verdict.reason == "signature holds"
    assert (verdict.kind, verdict.identifier, verdict.key_id) == ("vial", "W000026000001001", keyring.key_id)
    assert payload.startswith("LS1.VIAL.W000026000001001." + keyring.key_id + ".")


@pytest.mark.parametrize("kind", ["vial", "box", "patient", "certificate"])
def test_every_kind_round_trips(keyring, kind):
    assert keyring.verify(keyring.encode(kind, "ABC-123")).kind == kind


def test_payloads_are_short_and_in_the_qr_alphanumeric_set(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    assert len(payload) < 150
    assert set(payload) <= set(string.digits + string.ascii_uppercase + " $%*+-./:")


def test_verification_needs_only_the_public_key(keyring):
    public_only = Keyring(public_keys=[keyring.private_key.public_key()])
    assert public_only.verify(keyring.encode("box", "BX-0001")).valid
    with pytest.raises(ValueError):
        public_only.encode("box", "BX-0001")


def test_a_payload_forged_with_another_key_under_our_key_id_fails(keyring):
    forger = Keyring(Ed25519PrivateKey.generate())
    forged = forger.encode("vial", "W000026000001001").split(".")
    forged[3] = keyring.key_id  # claim to be signed by our key
    verdict = keyring.verify(".".join(forged))
    assert not verdict.valid and verdict.reason == "signature does not hold"


def test_a_payload_from_an_unknown_key_fails(keyring):
    stranger = Keyring(Ed25519PrivateKey.generate())
    verdict = keyring.verify(stranger.encode("vial", "W000026000001001"))
    assert not verdict.valid and verdict.reason == "unknown signing key"


def test_altering_any_single_character_breaks_verification(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    alphabet = string.ascii_uppercase + "234567"
    for position in range(len(payload)):
        original = payload[position]
        if original == ".":
            continue
        replacement = next(c for c in alphabet if c != original)
        altered = payload[:position] + replacement + payload[position + 1:]
        assert not keyring.verify(altered).valid, (position, altered)


def test_changing_the_identifier_to_another_vial_fails(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    assert not keyring.verify(payload.replace("001001", "001002")).valid


@pytest.mark.parametrize("bad", [
    "", "LS1", "LS1.VIAL", "LS2.VIAL.X.ABCDEF12." + "A" * 103, "LS1.DOG.X.ABCDEF12." + "A" * 103,
    "LS1.VIAL.X.ABCDEF12.SHORT", "LS1.VIAL..ABCDEF12." + "A" * 103, "ls1.vial.x.abcdef12." + "a" * 103,
    "LS1.VIAL.X.ABCDEF12." + "A" * 103 + ".EXTRA", "X" * 10_000, "LS1.VIAL.X.ABCDEF12." + "1" * 103,
])
def test_malformed_payloads_are_refused_without_raising(keyring, bad):
    verdict = keyring.verify(bad)
    assert verdict.valid is False and verdict.reason


@pytest.mark.parametrize("bad", [None, 42, b"\xff\xfe\x00", ["LS1"], object()])
def test_non_text_input_is_refused_without_raising(keyring, bad):
    assert keyring.verify(bad).valid is False


def test_random_bytes_never_verify_and_never_raise(keyring):
    rng = random.Random(1234)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        assert keyring.verify(blob).valid is False
        assert keyring.verify(blob.decode("latin-1")).valid is False


def test_non_canonical_base32_signature_is_refused(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    # The last base32 character carries 3 unused bits; setting them must not give a second valid form.
    body, signature = payload.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    index = alphabet.index(signature[-1])
    variants = [alphabet[(index & ~0b111) | low] for low in range(8)]
    valid = [v for v in variants if keyring.verify(f"{body}.{signature[:-1]}{v}").valid]
    assert valid == [signature[-1]]


def test_key_id_is_the_first_8_hex_of_the_sha256_of_the_public_key(keyring):
    import hashlib

    raw = keyring.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id_of(keyring.private_key.public_key()) == hashlib.sha256(raw).hexdigest()[:8].upper()


def test_the_installation_key_is_generated_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("LABSYS_SIGNING_KEY_FILE", raising=False)
    first = codec.app_keyring(tmp_path)
    assert (tmp_path / "signing_key.pem").exists()
    assert oct((tmp_path / "signing_key.pem").stat().st_mode & 0o777) == "0o600"
    codec._keyrings.clear()
    second = codec.app_keyring(tmp_path)
    assert first.key_id == second.key_id


def test_the_key_file_can_come_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.pem"
    key = codec.generate_private_key_file(path)
    monkeypatch.setenv("LABSYS_SIGNING_KEY_FILE", str(path))
    codec._keyrings.clear()
    assert codec.app_keyring(tmp_path / "unused").key_id == key_id_of(key.public_key())
    codec._keyrings.clear()


# ------------------------------------------------------------------ remembered verdicts

def _counting(keyring, monkeypatch) -> list:
    """The payloads the keyring really checks (its signature verification), in order."""
    checked = []
    real = keyring._verify

    def spy(payload):
        checked.append(payload)
        return real(payload)

    monkeypatch.setattr(keyring, "_verify", spy)
    return checked


def test_a_payload_found_valid_is_not_verified_again(monkeypatch):
    keyring = Keyring(Ed25519PrivateKey.generate())
    checked = _counting(keyring, monkeypatch)
    payload = keyring.encode("vial", "W000026000001001")
    first, second = keyring.verify(payload), keyring.verify(payload)
    assert first == second and second.valid
    assert checked == [payload]


def test_invalid_payloads_are_checked_every_time_and_never_remembered(keyring, monkeypatch):
    fresh = Keyring(public_keys=[keyring.private_key.public_key()])
    checked = _counting(fresh, monkeypatch)
    good = keyring.encode("vial", "W000026000001001")
    altered = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert fresh.verify(good).valid
    for _ in range(3):
        assert not fresh.verify(altered).valid
        assert not fresh.verify(good.replace("001001", "001002")).valid
    assert len(checked) == 1 + 6
    assert fresh._remembered.cache_info().currsize == 1
    assert fresh.verify(good).valid and len(checked) == 1 + 6  # the one kept is the valid one


def test_a_remembered_verdict_belongs_to_its_keyring(keyring):
    payload = keyring.encode("vial", "W000026000001001")
    assert keyring.verify(payload).valid
    stranger = Keyring(Ed25519PrivateKey.generate())
    assert stranger.verify(payload).reason == "unknown signing key"


def test_the_memory_keeps_the_most_recently_used_payloads_only(monkeypatch):
    keyring = Keyring(Ed25519PrivateKey.generate(), verified_cache_size=3)
    payloads = [keyring.encode("vial", f"W00002600000100{i}") for i in range(5)]
    checked = _counting(keyring, monkeypatch)
    for payload in payloads[:3]:
        keyring.verify(payload)
    keyring.verify(payloads[0])  # used again: now the most recent
    for payload in payloads[3:]:
        keyring.verify(payload)
    assert keyring._remembered.cache_info().currsize == 3
    for payload in (payloads[0], payloads[3], payloads[4]):  # the three kept: not checked again
        keyring.verify(payload)
    keyring.verify(payloads[1])  # forgotten: checked again
    assert checked == payloads[:3] + payloads[3:] + [payloads[1]]


def test_a_memory_of_size_zero_verifies_every_time(monkeypatch):
    keyring = Keyring(Ed25519PrivateKey.generate(), verified_cache_size=0)
    checked = _counting(keyring, monkeypatch)
    payload = keyring.encode("box", "BX-0001")
    assert keyring.verify(payload).valid and keyring.verify(payload).valid
    assert checked == [payload, payload] and keyring._remembered.cache_info().currsize == 0


def test_the_installation_keyring_is_found_again_through_an_unnormalised_instance_path(tmp_path, monkeypatch):
    monkeypatch.delenv("LABSYS_SIGNING_KEY_FILE", raising=False)
    codec._keyrings.clear()
    first = codec.app_keyring(f"{tmp_path}/./")
    assert codec.app_keyring(f"{tmp_path}/./") is first
    assert codec.app_keyring(tmp_path) is first
    codec._keyrings.clear()
