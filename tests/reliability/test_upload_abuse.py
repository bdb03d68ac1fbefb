"""Hostile potency uploads through the real upload page: each is refused with a clear reason,
nothing is stored (no row, no file in the image store, no audit entry) and the request's memory
stays bounded (peak traced allocations, measured with tracemalloc around the request).

Service-level refusals with small payloads are in tests/potency/test_services.py
(test_bad_files_are_refused_with_a_clear_reason_and_nothing_is_stored,
test_a_zip_bomb_and_an_archive_of_thousands_of_entries_are_refused); here they go through HTTP,
with the shipped limits, at real sizes."""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sqlalchemy import func, select

from labsys.potency.models import FieldImage
from tests.potency.app_support import potency_config  # noqa: F401  (autouse: images under tmp_path)
from tests.potency.app_support import field_tiff, make_run
from tests.reliability.walk import last_audit_id, regulated_writes, stored_counts

MEMORY_BOUND = 150 * 1024 * 1024
BIG = 200 * 1024 * 1024
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def _record_peak(engine: str, case: str, peak: int) -> None:
    """Keep each refused upload's traced memory peak for RELIABILITY.md."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"upload-abuse-{engine}.json"
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures[case] = {"peak_mib": round(peak / 2**20, 2), "bound_mib": MEMORY_BOUND // 2**20, "stored": 0}
    path.write_text(json.dumps(figures, indent=2, sort_keys=True))


@pytest.fixture
def upload(app, db, demo_users, login_as, tmp_path, request, engine_name):
    run = make_run(demo_users["technician"])
    client = login_as("technician")
    token = client.token(f"/potency/{run.id}/upload")

    def post(files, **fields):
        before, audit_since = stored_counts(), last_audit_id()
        tracemalloc.start()
        try:
            response = client.http.post(f"/potency/{run.id}/upload",
                                        data={"csrf_token": token, "files": files, **fields},
                                        content_type="multipart/form-data")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 422, response.status_code
        html = response.get_data(as_text=True)
        assert "No image was stored." in html
        assert db.session.scalar(select(func.count()).select_from(FieldImage)) == 0
        store = tmp_path / "images"
        assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
        assert regulated_writes(before, stored_counts(), audit_since) == {}
        assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB traced during the request"
        _record_peak(engine_name, request.node.originalname.removeprefix("test_"), peak)
        return html, peak

    return post


def _png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def test_a_zero_byte_file_is_refused(upload):
    html, _ = upload([(io.BytesIO(b""), "A01_f1.tif")])
    assert "A01_f1.tif: the file is empty" in html


def test_a_truncated_tiff_is_refused(upload):
    data = field_tiff(0.15, 7)
    html, _ = upload([(io.BytesIO(data[: len(data) // 3]), "A01_f1.tif")])
    assert "A01_f1.tif: corrupt" in html


def test_a_tiff_decompression_bomb_is_refused_from_its_header(upload, tmp_path):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        tiff.pages[0].tags["ImageWidth"].overwrite(200_000)
        tiff.pages[0].tags["ImageLength"].overwrite(200_000)
    data = path.read_bytes()
    assert len(data) < 10_000  # a few kilobytes claiming 40 gigapixels
    html, peak = upload([(io.BytesIO(data), "A01_f1.tif")])
    assert "exceed the limit" in html
    assert peak < 20 * 1024 * 1024


def test_a_png_decompression_bomb_is_refused_from_its_header(upload):
    data = _png(60_000, 60_000, b"\x00" * 60_001 * 4)
    assert len(data) < 10_000
    html, peak = upload([(io.BytesIO(data), "A01_f1.png")])
    assert "A01_f1.png" in html and ("exceed the limit" in html or "corrupt" in html)
    assert peak < 20 * 1024 * 1024


def test_a_200_mb_file_is_refused_by_size_without_being_read_into_memory(upload, tmp_path):
    path = tmp_path / "huge.tif"
    with open(path, "wb") as handle:  # sparse: 200 MB that take no disk
        handle.write(b"II*\x00")
        handle.truncate(BIG)
    with open(path, "rb") as stream:
        html, peak = upload([(stream, "A01_f1.tif")])
    assert f"A01_f1.tif: {BIG} bytes exceed the limit" in html
    assert peak < 32 * 1024 * 1024, f"{peak / 2**20:.0f} MiB for a 200 MiB file"


def test_a_request_over_the_content_limit_is_refused_before_its_body_is_read(app, demo_users, login_as):
    run = make_run(demo_users["technician"])
    client = login_as("technician")

    class Endless(io.RawIOBase):
        """A body that would be 300 MB; counts what the server reads of it."""
        taken = 0

        def readable(self):
            return True

        def tell(self):
            return self.taken

        def readinto(self, buffer):
            size = min(len(buffer), 300 * 1024 * 1024 - self.taken)
            buffer[:size] = b"\x00" * size
            self.taken += size
            return size

    body = Endless()
    response = client.http.post(f"/potency/{run.id}/upload", environ_overrides={
        "wsgi.input": body, "CONTENT_LENGTH": str(300 * 1024 * 1024),
        "CONTENT_TYPE": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    assert "larger than the configured limit" in response.get_data(as_text=True)
    assert body.taken < 1024 * 1024


def test_a_png_named_tif_is_refused(upload):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(buffer, format="PNG")
    html, _ = upload([(io.BytesIO(buffer.getvalue()), "A01_f1.tif")])
    assert "A01_f1.tif: the file holds a PNG image but its name says TIFF" in html


@pytest.mark.parametrize("name", ["../../etc/passwd.tif", "/etc/A01_f1.tif", "..\\..\\A01_f1.tif",
                                  "C:\\images\\A01_f1.tif", "../A01_f1.tif", "A01_f1\x1b.tif"])
def test_a_file_name_with_a_folder_path_is_refused(upload, name):
    # The test client writes the name into the part header as is; a browser escapes backslashes.
    sent = name.replace("\\", "\\\\")
    html, _ = upload([(io.BytesIO(field_tiff(0.15, 8)), sent)], well="A01", field_number="1")
    assert "the file name may not contain a folder path" in html or "control characters" in html
    # A NUL in a file name is refused before any view (tests/reliability/test_form_fuzz.py).


def test_a_zip_of_thousands_of_entries_is_refused_before_any_is_read(upload):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(5000):
            archive.writestr(f"A01_f{n + 1}.tif", b"II*\x00")
    html, _ = upload([(io.BytesIO(buffer.getvalue()), "plate.zip")])
    assert "plate.zip: the zip archive has 5000 entries; at most 500 are accepted" in html


def test_a_zip_bomb_is_refused_before_its_member_is_inflated(upload, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("A01_f1.tif", "w", force_zip64=True) as member:
            chunk = b"\x00" * (8 * 1024 * 1024)
            for _ in range(BIG // len(chunk)):
                member.write(chunk)
    assert path.stat().st_size < 1024 * 1024
    with open(path, "rb") as stream:
        html, peak = upload([(stream, "bomb.zip")])
    assert "bomb.zip: A01_f1.tif:" in html and "exceed the limit" in html
    assert peak < 32 * 1024 * 1024


def test_a_zip_bomb_within_the_size_limits_is_refused_by_its_ratio(upload, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("A01_f1.tif", b"II*\x00" + b"\x00" * (40 * 1024 * 1024))
    html, _ = upload([(io.BytesIO(buffer.getvalue()), "plate.zip")])
    assert "refused as a possible zip bomb" in html


def test_a_corrupt_zip_is_refused(upload):
    html, _ = upload([(io.BytesIO(b"PK\x03\x04" + b"\x00" * 100), "plate.zip")])
    assert "plate.zip: the zip archive is corrupt" in html
