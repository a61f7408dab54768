"""The client: AWS KMS operations as methods, with boto3's names, shapes and error codes.

Every call goes the same way: refresh caches and run due deletions/rotations, check the request,
run the handler, and append one audit record whatever the outcome. HSM and SQLite failures are
translated here into KMSInternalException, so they never leak to a caller as foreign exceptions.
"""

from __future__ import annotations

import re
import sqlite3

from kmsplan.errors import KMSError
from kmsplan.store import ops_access, ops_crypto, ops_keys, ops_rotation  # noqa: F401  (register operations)
from kmsplan.store.audit import event_time, request_parameters
from kmsplan.store.calls import OPERATIONS, Call, Operation
from kmsplan.store.hsm import TokenError
from kmsplan.store.keystore import KeyStore
from kmsplan.store.ops_access import grant_id_of_token
from kmsplan.store.params import check_request


def _identity(principal: str) -> dict:
    account = principal.split(":")[4] if principal.startswith("arn:") else None
    kind = "Root" if principal.endswith(":root") else "AssumedRole" if ":role/" in principal or \
        ":assumed-role/" in principal else "IAMUser" if ":user/" in principal else "AWSService"
    return {"type": kind, "arn": principal, "accountId": account}


class KmsClient:
    """A KMS client bound to one region and one calling principal (like a boto3 client)."""

    def __init__(self, store: KeyStore, region: str, principal: str, *, via_service: str | None = None,
                 source_ip: str | None = None) -> None:
        self.store = store
        self.region = region
        self.principal = principal
        self.via_service = via_service
        self.source_ip = source_ip or "local"
        self._identity = _identity(principal)

    def _call(self, operation: Operation, params: dict) -> dict:
        call = Call(self.store, self.region, self.principal, operation.name, {}, self.via_service)
        error: KMSError | None = None
        logged: dict = {}
        try:
            self.store.refresh()
            call.caller = self.store.authz.caller(self.principal)
            call.params = check_request(operation.name, params, operation.required, operation.allowed)
            logged = request_parameters(call.params)
            for token in call.params.get("GrantTokens", []):
                grant_id_of_token(token)
            response = operation.handler(call)
        except KMSError as failure:
            error = failure
        except TokenError as failure:
            error = KMSError("KMSInternalException", f"The HSM could not complete the request ({failure})")
        except sqlite3.Error as failure:
            error = KMSError("KMSInternalException", f"The metadata database failed ({type(failure).__name__}: {failure})")
        self._audit(call, logged, error)
        if error is not None:
            raise error
        return response

    def _audit(self, call: Call, logged: dict, error: KMSError | None) -> None:
        event = {
            "eventVersion": "1.08",
            "eventTime": event_time(self.store.now()),
            "eventSource": "kms.amazonaws.com",
            "eventName": call.operation,
            "awsRegion": self.region,
            "userIdentity": self._identity,
            "sourceIPAddress": self.source_ip,
            "requestParameters": logged,
            "resources": [{"ARN": arn, "type": "AWS::KMS::Key"} for arn in dict.fromkeys(call.resources)],
            "outcome": "Failure" if error else "Success",
        }
        if self.via_service:
            event["viaService"] = self.via_service
        if error is not None:
            event["errorCode"] = error.code
            event["errorMessage"] = error.message
        self.store.audit.append(event)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _method(operation: Operation):
    def method(self: KmsClient, **params) -> dict:
        return self._call(operation, params)

    method.__name__ = _snake(operation.name)
    method.__doc__ = f"AWS KMS {operation.name}. {operation.handler.__doc__ or ''}".strip()
    return method


for _operation in OPERATIONS.values():
    setattr(KmsClient, _snake(_operation.name), _method(_operation))
