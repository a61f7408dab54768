"""The symmetric ciphertext blob: self-describing, and authenticated from its first byte to its last.

    offset  size  field
    0       1     format version (1)
    1       1     key id kind: 0 single-Region (UUID), 1 multi-Region (mrk-)
    2       16    key id
    18      4     material version (big-endian)
    22      12    GCM IV
    34      4     CRC-32 of bytes 0..33
    38      n+16  AES-256-GCM ciphertext and tag

The header (bytes 0..37) and the canonical encryption context are the GCM AAD, so a flipped bit
anywhere fails the tag check. The CRC exists so that a flipped bit in the key id or version is
reported as InvalidCiphertextException (a damaged blob) rather than as NotFound or
IncorrectKey (a blob for some other key).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from functools import lru_cache

FORMAT_VERSION = 1
HEADER_SIZE = 38
TAG_SIZE = 16
_PREFIX = struct.Struct(">BB16sI12s")


class MalformedBlob(Exception):
    """The bytes are not a ciphertext blob this store produced (InvalidCiphertextException)."""


@dataclass(frozen=True)
class BlobHeader:
    key_id: str
    version: int
    iv: bytes
    header: bytes  # the raw 38 header bytes, part of the AAD


@lru_cache(maxsize=4096)
def key_id_bytes(key_id: str) -> tuple[int, bytes]:
    if key_id.startswith("mrk-"):
        return 1, bytes.fromhex(key_id[4:])
    return 0, uuid.UUID(key_id).bytes


@lru_cache(maxsize=4096)
def _key_id_text(kind: int, raw: bytes) -> str:
    return "mrk-" + raw.hex() if kind == 1 else str(uuid.UUID(bytes=raw))


def context_aad(encryption_context: dict[str, str]) -> bytes:
    """Canonical bytes of an encryption context: order of pairs never matters, content always does.

    Each key and value is UTF-8 with a 4-byte length prefix, pairs sorted by key: unambiguous, and
    cheaper than JSON on the hot path.
    """
    if not encryption_context:
        return b""
    parts = []
    for key, value in sorted(encryption_context.items()):
        raw_key, raw_value = key.encode(), value.encode()
        parts += (len(raw_key).to_bytes(4, "big"), raw_key, len(raw_value).to_bytes(4, "big"), raw_value)
    return b"".join(parts)


def build_header(key_id: str, version: int, iv: bytes) -> bytes:
    kind, raw = key_id_bytes(key_id)
    prefix = _PREFIX.pack(FORMAT_VERSION, kind, raw, version, iv)
    return prefix + struct.pack(">I", zlib.crc32(prefix))


def parse(blob: bytes) -> tuple[BlobHeader, bytes]:
    """Split a blob into its header and sealed part; any structural damage is MalformedBlob."""
    if len(blob) < HEADER_SIZE + TAG_SIZE:
        raise MalformedBlob("the ciphertext blob is too short")
    prefix, (crc,) = blob[:34], struct.unpack(">I", blob[34:HEADER_SIZE])
    if zlib.crc32(prefix) != crc:
        raise MalformedBlob("the ciphertext blob header is damaged")
    version, kind, raw, material, iv = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION or kind not in (0, 1):
        raise MalformedBlob("the ciphertext blob has an unknown format")
    return BlobHeader(_key_id_text(kind, raw), material, iv, blob[:HEADER_SIZE]), blob[HEADER_SIZE:]
