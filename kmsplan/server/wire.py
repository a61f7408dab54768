"""The AWS JSON 1.1 protocol of KMS, compiled once from botocore's own service model.

botocore ships the KMS model that boto3, the AWS CLI and the Encryption SDK serialize against;
reading shapes from it (rather than from a table written here) keeps the server and its clients in
agreement on every member's type, including which ones are base64 blobs and epoch timestamps.

Compiled at start-up into one decoder and one encoder per operation, so no request looks anything
up in the model:

- decoding checks what botocore's parameter validator checks on the client side — known members,
  required members, JSON types, minimum and maximum lengths and values — and turns base64 blobs
  into bytes. A body that is not JSON, or a value of the wrong JSON type, is a
  SerializationException (as AWS answers); a missing, unknown or out-of-range member is a
  ValidationException with AWS's "N validation errors detected" wording. Enumerations and patterns
  are left to the store, which checks them with its own messages and audits the refusal.
  Messages never repeat a request's values: they may be secrets.
- encoding turns bytes into base64 and datetimes into epoch seconds (floats), only where the model
  says the member is a blob or a timestamp; everything else goes out as the store returned it.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

import botocore.session

from kmsplan.errors import KMSError

TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
ACCEPTED_CONTENT_TYPES = frozenset({"application/x-amz-json-1.1", "application/x-amz-json-1.0"})

# AWS KMS answers 400 for every error but these (the model carries no status codes for KMS).
_STATUS = {
    "KMSInternalException": 500,
    "KeyUnavailableException": 500,
    "InternalFailure": 500,
    "DependencyTimeoutException": 503,
    "ServiceUnavailableException": 503,
    "RequestEntityTooLargeException": 413,
    "RequestTimeoutException": 408,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "LengthRequiredException": 411,
    "RequestHeaderFieldsTooLarge": 431,
}

Decoder = Callable[[object, str, list], object]
Encoder = Callable[[object], object]


def status_of(code: str) -> int:
    return _STATUS.get(code, 400)


def error_body(code: str, message: str) -> bytes:
    """The JSON 1.1 error document botocore parses: `__type` is the code, `message` the text."""
    return _PLAIN.encode({"__type": code, "message": message}).encode()


def _serialization(message: str) -> KMSError:
    return KMSError("SerializationException", message)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _length_checks(shape) -> tuple[int | None, int | None]:
    return shape.metadata.get("min"), shape.metadata.get("max")


def _length_error(errors: list, path: str, size: int, low: int | None, high: int | None) -> None:
    if low is not None and size < low:
        errors.append(f"Value at '{path}' failed to satisfy constraint: Member must have length greater than or "
                      f"equal to {low}")
    elif high is not None and size > high:
        errors.append(f"Value at '{path}' failed to satisfy constraint: Member must have length less than or "
                      f"equal to {high}")


class _Compiler:
    """Turns botocore shapes into closures, once per shape name (KMS shapes are shared widely)."""

    def __init__(self) -> None:
        self._decoders: dict[str, Decoder] = {}
        self._encoders: dict[str, Encoder | None] = {}

    # -- input ------------------------------------------------------------------------------
    def decoder(self, shape) -> Decoder:
        found = self._decoders.get(shape.name)
        if found is None:
            # Registered before it is built, so a recursive shape refers to itself, not to a loop here.
            cell: list[Decoder] = []
            self._decoders[shape.name] = lambda value, path, errors: cell[0](value, path, errors)
            found = getattr(self, f"_decode_{shape.type_name}", self._decode_unsupported)(shape)
            cell.append(found)
            self._decoders[shape.name] = found
        return found

    def _decode_structure(self, shape) -> Decoder:
        members = {name: (self.decoder(member), _camel(name)) for name, member in shape.members.items()}
        required = tuple(shape.required_members)
        allowed = ", ".join(members)

        def decode(value: object, path: str, errors: list) -> dict:
            if type(value) is not dict:
                raise _serialization(f"Expected an object for '{path or 'the request'}', got {_json_type(value)}")
            out = {}
            prefix = f"{path}." if path else ""
            for name, item in value.items():
                member = members.get(name)
                if member is None:
                    errors.append(f'Unknown parameter in input: "{name[:64]}", must be one of: {allowed}')
                    continue
                if item is None:
                    continue  # JSON null is an absent member, as AWS reads it
                out[name] = member[0](item, prefix + member[1], errors)
            for name in required:
                if name not in out:
                    errors.append(f"Value null at '{prefix}{members[name][1]}' failed to satisfy constraint: "
                                  "Member must not be null")
            return out

        return decode

    def _decode_list(self, shape) -> Decoder:
        item_decoder = self.decoder(shape.member)
        low, high = _length_checks(shape)

        def decode(value: object, path: str, errors: list) -> list:
            if type(value) is not list:
                raise _serialization(f"Expected an array for '{path}', got {_json_type(value)}")
            _length_error(errors, path, len(value), low, high)
            return [item_decoder(item, f"{path}.{index}.member", errors) for index, item in enumerate(value, 1)]

        return decode

    def _decode_map(self, shape) -> Decoder:
        key_decoder = self.decoder(shape.key)
        value_decoder = self.decoder(shape.value)
        low, high = _length_checks(shape)

        def decode(value: object, path: str, errors: list) -> dict:
            if type(value) is not dict:
                raise _serialization(f"Expected an object for '{path}', got {_json_type(value)}")
            _length_error(errors, path, len(value), low, high)
            return {key_decoder(key, f"{path}.key", errors): value_decoder(item, f"{path}.value", errors)
                    for key, item in value.items()}

        return decode

    def _decode_string(self, shape) -> Decoder:
        low, high = _length_checks(shape)

        def decode(value: object, path: str, errors: list) -> str:
            if type(value) is not str:
                raise _serialization(f"Expected a string for '{path}', got {_json_type(value)}")
            if low is not None or high is not None:
                _length_error(errors, path, len(value), low, high)
            return value

        return decode

    def _decode_blob(self, shape) -> Decoder:
        low, high = _length_checks(shape)

        def decode(value: object, path: str, errors: list) -> bytes:
            if type(value) is not str:
                raise _serialization(f"Expected a base64 string for '{path}', got {_json_type(value)}")
            try:
                data = binascii.a2b_base64(value, strict_mode=True)
            except (binascii.Error, ValueError):
                raise _serialization(f"Value for '{path}' is not valid base64") from None
            _length_error(errors, path, len(data), low, high)
            return data

        return decode

    def _decode_integer(self, shape) -> Decoder:
        low, high = _length_checks(shape)

        def decode(value: object, path: str, errors: list) -> int:
            if type(value) is not int:
                if type(value) is float and value.is_integer() and abs(value) < 2 ** 63:
                    value = int(value)
                else:
                    raise _serialization(f"Expected an integer for '{path}', got {_json_type(value)}")
            if low is not None and value < low:
                errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have value "
                              f"greater than or equal to {low}")
            elif high is not None and value > high:
                errors.append(f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have value "
                              f"less than or equal to {high}")
            return value

        return decode

    _decode_long = _decode_integer

    def _decode_boolean(self, shape) -> Decoder:
        def decode(value: object, path: str, errors: list) -> bool:
            if type(value) is not bool:
                raise _serialization(f"Expected a boolean for '{path}', got {_json_type(value)}")
            return value

        return decode

    def _decode_double(self, shape) -> Decoder:
        def decode(value: object, path: str, errors: list) -> float:
            if type(value) not in (int, float):
                raise _serialization(f"Expected a number for '{path}', got {_json_type(value)}")
            return float(value)

        return decode

    _decode_float = _decode_double

    def _decode_timestamp(self, shape) -> Decoder:
        def decode(value: object, path: str, errors: list) -> datetime:
            try:
                if type(value) in (int, float):
                    return datetime.fromtimestamp(value, timezone.utc)
                if type(value) is str:
                    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            except (ValueError, OverflowError, OSError):
                pass
            raise _serialization(f"Expected epoch seconds for '{path}', got {_json_type(value)}")

        return decode

    def _decode_unsupported(self, shape) -> Decoder:
        def decode(value: object, path: str, errors: list) -> object:
            raise _serialization(f"'{path}' has a type this server does not read ({shape.type_name})")

        return decode

    # -- output -----------------------------------------------------------------------------
    def encoder(self, shape) -> Encoder | None:
        """A converter for values of `shape`, or None when nothing in it needs converting."""
        if shape.name in self._encoders:
            return self._encoders[shape.name]
        self._encoders[shape.name] = None  # recursion guard: a recursive shape converts nothing twice
        kind = shape.type_name
        encoder: Encoder | None = None
        if kind == "blob":
            encoder = _encode_blob
        elif kind == "timestamp":
            encoder = _encode_timestamp
        elif kind == "structure":
            members = tuple((name, conv) for name, member in shape.members.items()
                            if (conv := self.encoder(member)) is not None)
            if members:
                def encoder(value: dict) -> dict:
                    out = dict(value)
                    for name, conv in members:
                        if name in out and out[name] is not None:
                            out[name] = conv(out[name])
                    return out
        elif kind == "list":
            conv = self.encoder(shape.member)
            if conv is not None:
                def encoder(value: list) -> list:
                    return [conv(item) for item in value]
        elif kind == "map":
            conv = self.encoder(shape.value)
            if conv is not None:
                def encoder(value: dict) -> dict:
                    return {key: conv(item) for key, item in value.items()}
        self._encoders[shape.name] = encoder
        return encoder


def _encode_blob(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode()


def _encode_timestamp(value: datetime) -> float:
    return value.timestamp()


def _refuse_other(value: object) -> object:
    raise TypeError(f"the store returned a {type(value).__name__} where the model has no blob or timestamp")


# Built once: json.dumps with any option builds a new encoder on every call.
_RESPONSES = json.JSONEncoder(separators=(",", ":"), default=_refuse_other)
_PLAIN = json.JSONEncoder(separators=(",", ":"))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class WireOperation:
    """One operation's request decoder and response encoder."""

    def __init__(self, name: str, decoder: Decoder | None, encoder: Encoder | None) -> None:
        self.name = name
        self.method = _snake(name)
        self._decoder = decoder
        self._encoder = encoder

    def decode(self, body: bytes) -> dict:
        """Request body -> the store client's keyword arguments (SerializationException,
        ValidationException on a body botocore would not have sent)."""
        document = decode_object(body)
        if self._decoder is None:
            if document:
                raise KMSError("ValidationException", f"{self.name} takes no parameters")
            return {}
        errors: list[str] = []
        params = self._decoder(document, "", errors)
        if errors:
            count = len(errors)
            raise KMSError("ValidationException",
                           f"{count} validation error{'s' if count > 1 else ''} detected: {'; '.join(errors)}")
        return params

    def encode(self, result: dict) -> bytes:
        converted = self._encoder(result) if self._encoder is not None else result
        return _RESPONSES.encode(converted).encode()


def decode_object(body: bytes) -> dict:
    """A request body as a JSON object (an empty body is {}); SerializationException otherwise."""
    if not body.strip():
        return {}
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _serialization("The request body is not valid JSON") from None
    if type(document) is not dict:
        raise _serialization(f"Expected a JSON object as the request body, got {_json_type(document)}")
    return document


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class Protocol:
    """Every operation the store serves, compiled from botocore's KMS model at construction."""

    def __init__(self, operation_names: Iterable[str]) -> None:
        model = botocore.session.get_session().get_service_model("kms")
        if model.metadata.get("targetPrefix") != TARGET_PREFIX[:-1]:
            raise RuntimeError("botocore's KMS model does not use the TrentService target prefix")
        compiler = _Compiler()
        self.operations: dict[str, WireOperation] = {}
        for name in operation_names:
            operation = model.operation_model(name)
            decoder = compiler.decoder(operation.input_shape) if operation.input_shape is not None else None
            encoder = compiler.encoder(operation.output_shape) if operation.output_shape is not None else None
            self.operations[TARGET_PREFIX + name] = WireOperation(name, decoder, encoder)

    def operation(self, target: str | None) -> WireOperation:
        found = self.operations.get(target) if target else None
        if found is None:
            shown = f"'{target[:128]}'" if target else "no X-Amz-Target header"
            raise KMSError("UnknownOperationException",
                           f"Unknown operation {shown}: this endpoint serves TrentService.<Operation> for "
                           f"{len(self.operations)} AWS KMS operations")
        return found


def content_type_ok(value: str | None) -> bool:
    """application/x-amz-json-1.1 (or 1.0), parameters such as charset allowed."""
    return bool(value) and value.split(";", 1)[0].strip().lower() in ACCEPTED_CONTENT_TYPES


__all__ = ["Protocol", "WireOperation", "CONTENT_TYPE", "content_type_ok", "decode_object", "error_body", "status_of"]
