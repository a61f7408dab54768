"""AWS Signature Version 4 (AWS4-HMAC-SHA256): the verifier `kmsplan serve` runs on every request,
and a small signer for load generators and tests that speak raw HTTP.

The verifier refuses, with the error codes and wording AWS uses, before anything touches a key:
a missing or malformed Authorization header (MissingAuthenticationTokenException,
IncompleteSignatureException), a date more than five minutes away from the server's clock, a
credential scope for another date, service or region, a wrong signature or a body altered after
signing (InvalidSignatureException), and an unknown or revoked access key or a session token
(UnrecognizedClientException).

Stricter than AWS on purpose: `host`, `x-amz-date` and `x-amz-target` must be signed (the target
names the operation; an unsigned one would let a captured request be replayed as another
operation), and so must every other `x-amz-*` header present. botocore and the AWS CLI sign all
of these anyway.

Secrets stay out of this module: it asks `signing_key(access_key_id, date, region)` for the
day-scoped SigV4 key, which kmsplan.server.credentials derives inside the HSM token.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from kmsplan.errors import KMSError

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
MAX_SKEW_SECONDS = 300
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_REQUIRED_SIGNED = ("host", "x-amz-date", "x-amz-target")
_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
             "Secret Access Key and signing method. Consult the service documentation for details.")
_INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Identity:
    """Who signed a request that verified, and for which region (the credential scope's)."""

    access_key_id: str
    principal: str
    region: str


def _incomplete(message: str) -> KMSError:
    return KMSError("IncompleteSignatureException", message)


def _invalid(message: str) -> KMSError:
    return KMSError("InvalidSignatureException", message)


def derive_signing_key(date_key: bytes, region: str, service: str) -> bytes:
    """The SigV4 signing key from kDate = HMAC("AWS4" + secret, YYYYMMDD)."""
    region_key = hmac.new(date_key, region.encode(), hashlib.sha256).digest()
    service_key = hmac.new(region_key, service.encode(), hashlib.sha256).digest()
    return hmac.new(service_key, TERMINATOR.encode(), hashlib.sha256).digest()


def secret_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The signing key computed from a secret held in memory (clients only; the server never does this)."""
    date_key = hmac.new(b"AWS4" + secret.encode(), date.encode(), hashlib.sha256).digest()
    return derive_signing_key(date_key, region, service)


def _canonical_value(value: str) -> str:
    if "  " in value or "\t" in value or value[:1] == " " or value[-1:] == " ":
        return " ".join(value.split())
    return value


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((name, value))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str], signed: list[str],
                      payload_hash: str) -> str:
    """The canonical request of SigV4 for non-S3 services (the path is URI-encoded once more)."""
    lines = "".join(f"{name}:{_canonical_value(headers.get(name, ''))}\n" for name in signed)
    return "\n".join((method, quote(path or "/", safe="/~"), _canonical_query(query), lines, ";".join(signed),
                      payload_hash))


def _string_to_sign(amz_date: str, scope: str, request: str) -> bytes:
    # Latin-1 gives back the header bytes exactly as they crossed the wire (the server decodes the
    # request head as latin-1, and http.client encodes header values so).
    digest = hashlib.sha256(request.encode("latin-1")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}".encode()


_DATES: dict[str, int | None] = {}


def _parse_amz_date(value: str) -> int | None:
    """Seconds since the epoch of an ISO-8601 basic UTC timestamp (20260101T120000Z), or None
    (memoized: every client signing in the same second sends the same string)."""
    if value in _DATES:
        return _DATES[value]
    if len(_DATES) > 1024:
        _DATES.clear()
    _DATES[value] = seconds = _parse_amz_date_uncached(value)
    return seconds


def _parse_amz_date_uncached(value: str) -> int | None:
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        return None
    try:
        fields = (int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[11:13]),
                  int(value[13:15]))
        if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60
                and fields[5] < 61):
            return None
        return calendar.timegm(fields)
    except (ValueError, OverflowError):
        return None


def _format_amz_date(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


# What botocore and the AWS CLI send, matched in one step; anything else takes the slow path,
# which also explains what is wrong.
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,\s]+/\d{8}/[^/,\s]+/[^/,\s]+/[^/,\s]+), ?"
                            r"SignedHeaders=([a-z0-9;_.-]+), ?Signature=([0-9a-f]{64})\Z")


def parse_authorization(value: str) -> tuple[list[str], list[str], str]:
    """Split `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` into the credential
    parts, the signed header names and the signature; IncompleteSignatureException otherwise."""
    match = _AUTHORIZATION.match(value)
    if match is not None:
        signed = match.group(2).split(";")
        if signed == sorted(set(signed)) and all(signed):
            return match.group(1).split("/"), signed, match.group(3)
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{algorithm[:64]}' (use {ALGORITHM})")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        name, equals, item = part.partition("=")
        if not equals:
            raise _incomplete(f"'{part[:128]}' not a valid key=value pair (missing equal-sign) in Authorization "
                              "header")
        fields[name.strip()] = item.strip()
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if not fields.get(name)]
    if missing:
        raise _incomplete(" ".join(f"Authorization header requires '{name}' parameter." for name in missing))
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or not all(credential):
        raise _incomplete("Credential should be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, not "
                          f"{len(credential)} slash-separated part(s)")
    signed = fields["SignedHeaders"].split(";")
    if signed != sorted(set(signed)) or any(name != name.lower() or not name for name in signed):
        raise _incomplete("SignedHeaders must list lower-case header names, sorted, each once, separated by ';'")
    return credential, signed, fields["Signature"]


class Verifier:
    """Checks SigV4 on one request; `identity()` returns who signed it or raises the AWS error."""

    def __init__(self, regions: tuple[str, ...] | list[str], principal_of: Callable[[str], str | None],
                 signing_key: Callable[[str, str, str], bytes], *, service: str = "kms",
                 clock: Callable[[], float] = time.time, max_skew: int = MAX_SKEW_SECONDS) -> None:
        self._regions = frozenset(regions)
        self._principal_of = principal_of
        self._signing_key = signing_key
        self._service = service
        self._clock = clock
        self._max_skew = max_skew

    def identity(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Identity:
        """Verify the request (header names lower-case, repeated headers joined with ',')."""
        authorization = headers.get("authorization")
        if not authorization:
            raise KMSError("MissingAuthenticationTokenException", "Missing Authentication Token")
        credential, signed, signature = parse_authorization(authorization)
        access_key_id, scope_date, region, service, terminator = credential
        amz_date = headers.get("x-amz-date")
        if not amz_date:
            raise _incomplete("Authorization header requires existence of an 'X-Amz-Date' header.")
        signed_at = _parse_amz_date(amz_date)
        if signed_at is None:
            raise _incomplete(f"Date must be in ISO-8601 'basic format'. Got '{amz_date[:32]}'. See "
                              "http://en.wikipedia.org/wiki/ISO_8601")
        for name in _REQUIRED_SIGNED:
            if name not in signed:
                raise _incomplete(f"'{name}' must be a 'SignedHeader' in the AWS Authorization.")
        for name in signed:
            if name not in headers:
                raise _incomplete(f"SignedHeaders names '{name[:64]}', which the request does not carry.")

        now = self._clock()
        if signed_at < now - self._max_skew:
            raise _invalid(f"Signature expired: {amz_date} is now earlier than {_format_amz_date(now - self._max_skew)} "
                           f"({_format_amz_date(now)} - {self._max_skew // 60} min.)")
        if signed_at > now + self._max_skew:
            raise _invalid(f"Signature not yet current: {amz_date} is still later than "
                           f"{_format_amz_date(now + self._max_skew)} ({_format_amz_date(now)} + "
                           f"{self._max_skew // 60} min.)")
        if scope_date != amz_date[:8]:
            raise _invalid("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                           f"'{scope_date[:16]}' != '{amz_date[:8]}', from 'X-Amz-Date'.")
        if service != self._service:
            raise _invalid(f"Credential should be scoped to correct service: '{self._service}'. ")
        if region not in self._regions:
            raise _invalid(f"Credential should be scoped to a valid region, not '{region[:64]}'. ")
        if terminator != TERMINATOR:
            raise _invalid(f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not "
                           f"'{terminator[:64]}'.")
        if "x-amz-security-token" in headers:
            # kmsplan issues long-term access keys only: no session token can be valid.
            raise KMSError("UnrecognizedClientException", _INVALID_TOKEN)
        principal = self._principal_of(access_key_id)
        if principal is None:
            raise KMSError("UnrecognizedClientException", _INVALID_TOKEN)
        signed_set = frozenset(signed)
        for name in headers:
            if name.startswith("x-amz-") and name not in signed_set:
                raise _incomplete(f"Header '{name[:64]}' is not signed: every x-amz-* header must be in SignedHeaders.")

        payload_hash = hashlib.sha256(body).hexdigest()
        claimed = headers.get("x-amz-content-sha256")
        if claimed is not None and claimed != payload_hash:
            raise _invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
        request = canonical_request(method, path, query, headers, signed, payload_hash)
        scope = f"{scope_date}/{region}/{service}/{TERMINATOR}"
        key = self._signing_key(access_key_id, scope_date, region)
        expected = hmac.digest(key, _string_to_sign(amz_date, scope, request), "sha256").hex()
        if not hmac.compare_digest(expected, signature):
            raise _invalid(_MISMATCH)
        return Identity(access_key_id, principal, region)


def sign(method: str, path: str, headers: Mapping[str, str], body: bytes, *, access_key_id: str, region: str,
         signing_key: bytes, service: str = "kms", now: float | None = None) -> dict[str, str]:
    """`headers` plus X-Amz-Date and Authorization, signing every header given (Host among them).

    Takes a precomputed signing key (`secret_signing_key`) so a load generator pays one HMAC and two
    SHA-256 per request, not five HMACs."""
    amz_date = _format_amz_date(time.time() if now is None else now)
    out = dict(headers)
    out["X-Amz-Date"] = amz_date
    lower = {name.lower(): value for name, value in out.items()}
    signed = sorted(lower)
    path, _, query = path.partition("?")
    request = canonical_request(method, path, query, lower, signed, hashlib.sha256(body).hexdigest())
    scope = f"{amz_date[:8]}/{region}/{service}/{TERMINATOR}"
    signature = hmac.new(signing_key, _string_to_sign(amz_date, scope, request), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={';'.join(signed)}, "
                            f"Signature={signature}")
    return out
