"""One error tree for the whole package.

Every error a user can cause is a `KmsplanError`; the CLI translates them in one place
(`kmsplan.cli`) into a message, a hint and an exit code, so no user ever sees a traceback.
"""

from __future__ import annotations


class KmsplanError(Exception):
    """An error the user can act on: `message` says what, `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(KmsplanError):
    """The command line itself is wrong (unknown option, missing argument, bad value)."""


class KMSError(KmsplanError):
    """An AWS KMS API error: `code` is the AWS error code, as boto3 reports it.

    The store raises these from every client method, so callers can write
    `except KMSError as err: if err.code == "NotFoundException": ...` exactly as they would
    against AWS KMS through botocore's `ClientError`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def response(self) -> dict:
        """The error in botocore's `ClientError.response` shape, for code written against boto3."""
        return {"Error": {"Code": self.code, "Message": self.message}}
