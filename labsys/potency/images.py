"""Checking uploaded field images and keeping them content-addressed by SHA-256.

A file is accepted only if it decodes completely as an 8- or 16-bit grayscale TIFF or PNG (or
one chosen channel of a multichannel image), is within the byte-size limit and within the pixel
limit (checked from the header, before decoding: a decompression bomb is refused unread).
Nothing is written before every file of an upload has passed."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from labsys.potency.image_files import UnreadableImage, read_fields

FIELD_NAME = re.compile(r"^(?P<well>[A-Pa-p]\d{1,2})[_-]f(?:ield)?(?P<field>\d{1,3})\.(?P<ext>tiff?|png)$",
                        re.IGNORECASE)
ALLOWED_EXTENSIONS = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class CheckedImage:
    filename: str
    data: bytes
    sha256: str
    width: int
    height: int
    bit_depth: int
    channel: int | None


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def unsafe_name_reason(filename: str) -> str | None:
    """Why an uploaded file's name is refused: browsers send a bare file name, so a folder path
    (``../``, ``/etc/…``, ``C:\\…``) or a control character means a hostile or broken client."""
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        return f"{filename!r}: the file name holds control characters"
    if "/" in filename or "\\" in filename or filename in (".", "..") or re.match(r"^[A-Za-z]:", filename):
        return f"{filename!r}: the file name may not contain a folder path"
    return None


def stream_size(source: bytes | BinaryIO) -> int:
    """Byte size of an upload without reading it (the stream is left at its start)."""
    if isinstance(source, (bytes, bytearray)):
        return len(source)
    source.seek(0, os.SEEK_END)
    size = source.tell()
    source.seek(0)
    return size


def parse_field_name(filename: str) -> tuple[str, int] | None:
    """'B03_f2.tif' → ('B03', 2) (well not yet checked against the plate); None otherwise."""
    match = FIELD_NAME.match(Path(filename).name)
    if not match:
        return None
    return match.group("well").upper(), int(match.group("field"))


def decode(data: bytes, filename: str, max_pixels: int, channel: int | None = None) -> tuple[np.ndarray, int | None]:
    """Decode one field (a 2-D uint8/uint16 array and the channel taken), or raise
    UnreadableImage. Reading is analysis.read_fields' (pixel limit checked from the header);
    the app adds: one field per file, 8/16-bit only, a sensible size."""
    try:
        fields = read_fields(data, channel=channel, max_pixels=max_pixels)
    except UnreadableImage as refused:
        raise UnreadableImage(str(refused).replace("uploaded bytes", filename, 1)) from None
    except Exception as error:  # any decoder failure means a corrupt file
        raise UnreadableImage(f"{filename}: corrupt or unreadable image ({type(error).__name__})") from None
    if len(fields) != 1:
        raise UnreadableImage(f"{filename}: holds {len(fields)} frames; upload one field per file")
    plane = np.asarray(fields[0][1])
    if plane.dtype not in (np.uint8, np.uint16):
        raise UnreadableImage(f"{filename}: {plane.dtype} pixels; only 8- or 16-bit images are scored")
    if plane.ndim != 2 or min(plane.shape) < 32:
        raise UnreadableImage(f"{filename}: {plane.shape} is not a field image of at least 32×32 pixels")
    return plane, channel


def check_image(data: bytes, filename: str, max_bytes: int, max_pixels: int,
                channel: int | None = None) -> CheckedImage:
    """Every check of one upload, before anything is stored."""
    if len(data) == 0:
        raise UnreadableImage(f"{filename}: the file is empty")
    if len(data) > max_bytes:
        raise UnreadableImage(f"{filename}: {len(data)} bytes exceed the limit of {max_bytes}")
    content = "TIFF" if data[:4] in TIFF_MAGIC else "PNG" if data[:8] == PNG_MAGIC else None
    extension = Path(filename).suffix.lower()
    named = "TIFF" if extension in (".tif", ".tiff") else "PNG" if extension == ".png" else None
    if content and named and content != named:
        raise UnreadableImage(f"{filename}: the file holds a {content} image but its name says {named}")
    plane, taken = decode(data, filename, max_pixels, channel)
    return CheckedImage(filename=filename, data=data, sha256=hashlib.sha256(data).hexdigest(),
                        width=int(plane.shape[1]), height=int(plane.shape[0]),
                        bit_depth=8 if plane.dtype == np.uint8 else 16, channel=taken)


def unpack_zip(data: bytes | BinaryIO, max_entries: int, max_total_bytes: int, max_ratio: float = 200.0,
               max_member_bytes: int | None = None) -> list[tuple[str, bytes]]:
    """The image files of a zip archive (bytes or a seekable upload stream, read entry by entry),
    refusing archives that are bombs or too big: too many entries, too many uncompressed bytes in
    total (from the directory, then while reading), an entry larger than ``max_member_bytes`` or
    compressed beyond ``max_ratio`` (all refused before the entry is read)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UnreadableImage("the zip archive is corrupt") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()
                 and not Path(i.filename).name.startswith(".") and "__MACOSX" not in i.filename]
        if len(infos) > max_entries:
            raise UnreadableImage(f"the zip archive has {len(infos)} entries; at most {max_entries} are accepted")
        declared = sum(i.file_size for i in infos)
        if declared > max_total_bytes:
            raise UnreadableImage(f"the zip archive expands to {declared} bytes; the limit is {max_total_bytes}")
        files = []
        total = 0
        for info in infos:
            if max_member_bytes is not None and info.file_size > max_member_bytes:
                raise UnreadableImage(f"{info.filename}: {info.file_size} bytes exceed the limit of {max_member_bytes}")
            if info.compress_size and info.file_size / info.compress_size > max_ratio:
                raise UnreadableImage(f"{info.filename}: compressed {info.file_size / info.compress_size:.0f}:1, "
                                      "refused as a possible zip bomb")
            try:
                with archive.open(info) as handle:
                    content = handle.read(info.file_size + 1)
            except Exception as error:
                raise UnreadableImage(f"{info.filename}: cannot be read from the archive ({type(error).__name__})") from None
            if len(content) > info.file_size:
                raise UnreadableImage(f"{info.filename}: larger than the archive declares")
            total += len(content)
            if total > max_total_bytes:
                raise UnreadableImage(f"the zip archive expands beyond {max_total_bytes} bytes")
            files.append((Path(info.filename).name, content))
        return files


class ContentStore:
    """Files kept under a directory by the SHA-256 of their content (``ab/abcdef…``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store bytes; returns (sha256, newly_written). Writing is atomic (temp file + rename)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha)
        if path.exists():
            return sha, False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return sha, True

    def get(self, sha256: str) -> bytes:
        data = self.path_for(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UnreadableImage(f"stored file {sha256[:12]}… no longer matches its hash")
        return data

    def remove_new(self, sha256: str) -> None:
        """Undo a write of this request (used when the database transaction fails)."""
        self.path_for(sha256).unlink(missing_ok=True)
