"""Sealed files: a payload behind a header with its length and sha256, checked before use.

A sealed blob is ``MAGIC | format version (u16) | payload length (u64) | sha256 | payload``.
:func:`unseal` verifies all of it *before* the payload is handed on (to ``pickle.loads``), so
a flipped bit or a truncated file is reported instead of loaded. The digest detects
corruption, not tampering: whoever can write the file can write a matching digest.

>>> blob = header(b"payload", 3) + b"payload"
>>> bytes(unseal(blob, 3))
b'payload'
>>> unseal(blob[:-1], 3)
Traceback (most recent call last):
...
stream.sealed.SealError: truncated: the header announces 7 payload bytes, the file holds 6
>>> flipped = blob[:-1] + bytes([blob[-1] ^ 1])
>>> unseal(flipped, 3)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.sealed.SealError: corrupt: the payload's sha256 ... does not match the header's ...
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["MAGIC", "SealError", "UnsupportedFormat", "header", "unseal"]

MAGIC = b"FBLOOP\x00\x01"
_HEADER = struct.Struct(f">{len(MAGIC)}sHQ32s")


class SealError(ValueError):
    """The blob is not what was sealed: truncated, corrupt or not sealed at all."""


class UnsupportedFormat(SealError):
    """The blob is not sealed, or sealed with another format version."""


def header(payload: bytes, version: int) -> bytes:
    """The header to write in front of ``payload`` (written apart: no copy of a big payload)."""
    return _HEADER.pack(MAGIC, version, len(payload), hashlib.sha256(payload).digest())


def unseal(blob: bytes, version: int) -> memoryview:
    """The payload of ``blob`` (a view, not a copy) after checking its header, length and
    digest."""
    if blob[: len(MAGIC)] != MAGIC[: len(blob)]:
        raise UnsupportedFormat("not a sealed file (an older format, or not written by us)")
    if len(blob) < _HEADER.size:
        raise SealError(f"truncated: {len(blob)} bytes, shorter than the header")
    magic, found, length, digest = _HEADER.unpack_from(blob)
    if found != version:
        raise UnsupportedFormat(f"format version {found}, this program reads {version}")
    payload = memoryview(blob)[_HEADER.size :]
    if len(payload) != length:
        raise SealError(
            f"truncated: the header announces {length} payload bytes, the file holds {len(payload)}"
        )
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
        raise SealError(
            f"corrupt: the payload's sha256 {actual.hex()[:16]}... does not match the header's "
            f"{digest.hex()[:16]}..."
        )
    return payload
