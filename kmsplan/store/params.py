"""Request validation: boto3's parameter names and types, checked before anything is touched.

A request that fails here is a ValidationException naming the parameter and what it accepts, and
it changes nothing. Names are typed once, in `PARAMETER_TYPES`, because AWS uses each name with
one meaning across all operations.
"""

from __future__ import annotations

import re

from kmsplan.errors import KMSError

_STR, _BYTES, _INT, _BOOL = "string", "bytes", "integer", "boolean"
_MAP, _LIST, _TAGS, _CONSTRAINTS = "map of strings", "list of strings", "list of tags", "grant constraints"

PARAMETER_TYPES: dict[str, str] = {
    "KeyId": _STR, "Description": _STR, "KeySpec": _STR, "CustomerMasterKeySpec": _STR, "KeyUsage": _STR,
    "Origin": _STR, "Policy": _STR, "PolicyName": _STR, "BypassPolicyLockoutSafetyCheck": _BOOL,
    "Tags": _TAGS, "TagKeys": _LIST, "MultiRegion": _BOOL, "Limit": _INT, "Marker": _STR,
    "PendingWindowInDays": _INT, "AliasName": _STR, "TargetKeyId": _STR, "RotationPeriodInDays": _INT,
    "GranteePrincipal": _STR, "RetiringPrincipal": _STR, "Operations": _LIST, "Constraints": _CONSTRAINTS,
    "GrantTokens": _LIST, "Name": _STR, "GrantId": _STR, "GrantToken": _STR, "ReplicaRegion": _STR,
    "PrimaryRegion": _STR, "Plaintext": _BYTES, "CiphertextBlob": _BYTES, "EncryptionContext": _MAP,
    "EncryptionAlgorithm": _STR, "SourceEncryptionContext": _MAP, "SourceKeyId": _STR,
    "DestinationKeyId": _STR, "DestinationEncryptionContext": _MAP, "SourceEncryptionAlgorithm": _STR,
    "DestinationEncryptionAlgorithm": _STR, "NumberOfBytes": _INT, "KeyPairSpec": _STR, "Message": _BYTES,
    "MessageType": _STR, "SigningAlgorithm": _STR, "Signature": _BYTES, "MacAlgorithm": _STR, "Mac": _BYTES,
    "DryRun": _BOOL, "IncludeKeyMaterial": _STR,
}


_EXACT = {_STR: str, _BYTES: bytes}


def validation_error(message: str) -> KMSError:
    return KMSError("ValidationException", message)


def _type_ok(kind: str, value: object) -> bool:
    if type(value) is _EXACT.get(kind):
        return True
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BYTES:
        return isinstance(value, (bytes, bytearray, memoryview))
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _MAP:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if kind == _LIST:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == _TAGS:
        return isinstance(value, list) and all(
            isinstance(tag, dict) and set(tag) <= {"TagKey", "TagValue"} and isinstance(tag.get("TagKey"), str)
            and isinstance(tag.get("TagValue"), str) for tag in value
        )
    if kind == _CONSTRAINTS:
        return isinstance(value, dict) and set(value) <= {"EncryptionContextEquals", "EncryptionContextSubset"} \
            and all(_type_ok(_MAP, inner) for inner in value.values())
    raise AssertionError(kind)


_TEXT_KINDS = frozenset({_STR, _MAP, _LIST, _TAGS, _CONSTRAINTS})


def _text_ok(value: object) -> bool:
    """False when some string holds a lone surrogate: it has no UTF-8 form, so it could be neither
    stored nor written to the audit log (and would fail there instead of here)."""
    if isinstance(value, str):
        if value.isascii():
            return True
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_text_ok(key) and _text_ok(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_text_ok(item) for item in value)
    return True


def _plain(kind: str, value: object) -> bool:
    """The common request values, settled without the general checks: bytes, ASCII strings and
    maps of ASCII strings (joining raises TypeError on anything but strings)."""
    if kind == _STR:
        return type(value) is str and value.isascii()
    if kind == _BYTES:
        return type(value) is bytes
    if kind == _MAP and type(value) is dict:
        try:
            return "".join(value).isascii() and "".join(value.values()).isascii()
        except TypeError:
            return False
    return False


def check_request(operation: str, params: dict, required: tuple[str, ...], allowed: frozenset[str]) -> dict:
    """Check names, presence and types; return the parameters with bytes normalised."""
    checked = {}
    for name, value in params.items():
        if name not in allowed:
            raise validation_error(
                f"Unknown parameter {name!r} for {operation}; valid parameters: {', '.join(sorted(allowed)) or 'none'}"
            )
        kind = PARAMETER_TYPES[name]
        if _plain(kind, value):
            checked[name] = value
            continue
        if not _type_ok(kind, value):
            raise validation_error(f"Invalid type for parameter {name}: got {type(value).__name__}, expected {kind}")
        if kind in _TEXT_KINDS and not _text_ok(value):
            raise validation_error(f"Invalid value for parameter {name}: it is not valid Unicode text "
                                   "(it holds a lone surrogate code point)")
        checked[name] = bytes(value) if kind == _BYTES and type(value) is not bytes else value
    for name in required:
        if name not in checked:
            raise validation_error(f"Missing required parameter {name!r} for {operation}")
    return checked


def one_of(name: str, value: str, allowed: list[str] | tuple[str, ...] | set[str]) -> str:
    if value not in allowed:
        raise validation_error(
            f"1 validation error detected: Value '{value}' at '{name[0].lower() + name[1:]}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(sorted(allowed))}]"
        )
    return value


def in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise validation_error(
            f"1 validation error detected: Value '{value}' at '{name[0].lower() + name[1:]}' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )
    return value


def length(name: str, value: str | bytes, low: int, high: int) -> None:
    if not low <= len(value) <= high:
        raise validation_error(
            f"1 validation error detected: Value at '{name[0].lower() + name[1:]}' failed to satisfy constraint: "
            f"Member must have length between {low} and {high} (got {len(value)})"
        )


ALIAS_PATTERN = re.compile(r"^alias/[a-zA-Z0-9/_-]+\Z")
PRINCIPAL_PATTERN = re.compile(
    r"^(arn:aws:iam::\d{12}:(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|arn:aws:sts::\d{12}:assumed-role/[\w+=,.@/-]+"
    r"|[a-z0-9.-]+\.amazonaws\.com)\Z"
)


def alias_name(value: str, *, for_create: bool) -> str:
    length("AliasName", value, 1, 256)
    if not ALIAS_PATTERN.match(value):
        raise validation_error(
            f"Alias name {value!r} is invalid: it must start with 'alias/' and contain only letters, digits, "
            "'/', '_' and '-'"
        )
    if for_create and value.startswith("alias/aws/"):
        # AWS answers NotAuthorizedException here (the name is well formed, the prefix is AWS's).
        raise KMSError("NotAuthorizedException",
                       f"Cannot create alias with prefix 'alias/aws/': {value!r} is reserved for AWS managed keys")
    return value


def principal(name: str, value: str) -> str:
    if not PRINCIPAL_PATTERN.match(value):
        raise validation_error(
            f"{name} {value!r} is not a valid principal: use an IAM ARN such as "
            "arn:aws:iam::111122223333:role/name, or a service principal"
        )
    return value


def tags(value: list[dict]) -> dict[str, str]:
    """Validate tags against AWS's limits; returns them as a dict (last one wins, like AWS)."""
    result: dict[str, str] = {}
    for tag in value:
        key, text = tag["TagKey"], tag["TagValue"]
        if not 1 <= len(key) <= 128 or len(text) > 256:
            raise KMSError("TagException", f"Tag {key!r}: keys take 1-128 characters and values 0-256")
        if key.lower().startswith("aws:"):
            raise KMSError("TagException", f"Tag key {key!r} is reserved: the 'aws:' prefix belongs to AWS")
        result[key] = text
    return result
