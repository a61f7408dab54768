"""The reconciler's backend over the network: a served kmsplan store, through boto3.

`kmsplan plan|apply|drift|import ... --endpoint URL` reads and writes the store with boto3's KMS
client and the standard AWS credential chain (environment, profile, ...), so a CI runner needs no
HSM, only a URL and an access key made with `kmsplan store credentials create`. The principal is
the one the credential is bound to: the server authenticates it and tells us (WhoAmI), so guards
are evaluated for exactly the identity whose requests will be authorized.

The principals registry, the keys' last use and the audit log's records, which the KMS API does
not offer, come from the server's `KmsplanService.*` extension calls, signed with SigV4 like
every KMS call.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.policy import Principal
from kmsplan.policy.document import parse_policy_cached
from kmsplan.store.principals import principal_of, read_principals_file

_TIMEOUT = 60


class _Kms:
    """A boto3 KMS client whose errors are KMSError (with `.code`), as the embedded store raises."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(**params: Any) -> dict:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                return method(**params)
            except ClientError as error:
                details = error.response.get("Error", {})
                raise KMSError(details.get("Code", "InternalFailure"), details.get("Message", str(error))) from None
            except BotoCoreError as error:
                raise KmsplanError(f"the store at {self._client.meta.endpoint_url} did not answer: {error}",
                                   hint="check --endpoint (or KMSPLAN_ENDPOINT) and that `kmsplan serve` runs there"
                                   ) from None

        return call


class RemoteBackend:
    """A served store; every call is made as the principal the AWS credentials are bound to."""

    def __init__(self, endpoint: str, region: str | None = None,
                 access_key: tuple[str, str] | None = None) -> None:
        """`access_key` (id, secret) overrides the AWS credential chain (for code that acts as
        several principals, tests among them)."""
        import boto3

        self.endpoint = endpoint.rstrip("/")
        self._session = (boto3.Session(aws_access_key_id=access_key[0], aws_secret_access_key=access_key[1])
                         if access_key else boto3.Session())
        credentials = self._session.get_credentials()
        if credentials is None:
            raise KmsplanError("no AWS credentials for the store at " + self.endpoint,
                               hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile) to an access key "
                                    "made with `kmsplan store credentials create --principal ARN`")
        self._credentials = credentials
        first = region or self._session.region_name or os.environ.get("AWS_REGION")  # SDKs read either
        if not first:
            raise KmsplanError("no region to reach the store at " + self.endpoint + " with",
                               hint="set AWS_REGION (or AWS_DEFAULT_REGION) to one of the store's regions")
        who = self._extension("WhoAmI", first, {})
        self.principal: str = who["Principal"]
        self.account: str = who["Account"]
        self.regions: tuple[str, ...] = tuple(who["Regions"])
        self._clients: dict[str, _Kms] = {}
        self._principals: list[Principal] | None = None

    @classmethod
    def open(cls, endpoint: str, principal: str | None = None, region: str | None = None) -> RemoteBackend:
        backend = cls(endpoint, region)
        if principal is not None and principal != backend.principal:
            raise KmsplanError(f"--principal {principal} is not who the credentials are: {backend.principal}",
                               hint="over --endpoint the principal is the one the access key is bound to: drop "
                                    "--principal, or use an access key of that principal (`kmsplan store credentials "
                                    "create --principal ARN` makes one for a registered principal)")
        return backend

    # -- the KMS API ------------------------------------------------------------------------
    def client(self, region: str) -> _Kms:
        if region not in self._clients:
            self._clients[region] = _Kms(self._session.client("kms", region_name=region, endpoint_url=self.endpoint))
        return self._clients[region]

    def clients(self) -> dict[str, _Kms]:
        return {region: self.client(region) for region in self.regions}

    # -- what the KMS API does not offer ----------------------------------------------------
    def principals(self) -> list[Principal]:
        if self._principals is None:
            found = self._extension("ListPrincipals", self.regions[0], {})["Principals"]
            self._principals = [
                Principal(p["Arn"], p.get("OrgId"), p.get("Tags") or {},
                          tuple(parse_policy_cached(text, "identity") for text in p.get("Policies") or ()))
                for p in found]
        return self._principals

    #: where an unknown principal should be added (AwsBackend: the --aws-principals file)
    _unknown_principal = ("is not registered in the store",
                          "register it with `kmsplan store principals apply FILE` on the store's host")

    def principal_record(self, arn: str) -> Principal:
        for principal in self.principals():
            if principal.arn == arn:
                return principal
        raise KmsplanError(f"principal {arn} {self._unknown_principal[0]}", hint=self._unknown_principal[1])

    def last_use(self, arns: Iterable[str]) -> dict[str, datetime]:
        wanted = sorted(set(arns))
        if not wanted:
            return {}
        used = self._extension("LastUse", self.regions[0], {"KeyArns": wanted})["LastUse"]
        return {arn: datetime.fromisoformat(when) for arn, when in used.items()}

    def lookup_events(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a `KmsplanService.LookupEvents` query (filters as
        `kmsplan.store.audit_query.Query.to_wire()` makes them, plus `Limit`, `MaxResults`,
        `NextToken`, `FromEnd`), following NextToken; only one page is held at a time, so a
        query over a huge log streams. The caller must be allowed to read the log (the account
        root, or a principal whose identity policies allow kms:* on every resource)."""
        params = dict(request)
        while True:
            page = self._extension("LookupEvents", self.regions[0], params)
            yield page
            token = page.get("NextToken")
            if not token:
                return
            params = {name: value for name, value in request.items() if name not in ("FromEnd", "NextToken")}
            params["NextToken"] = token

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def close(self) -> None:
        self._clients.clear()

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a signed extension call --------------------------------------------------------------
    def _extension(self, name: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        body = json.dumps(params).encode()
        request = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers={
            "X-Amz-Target": f"KmsplanService.{name}", "Content-Type": "application/x-amz-json-1.1"})
        SigV4Auth(self._credentials.get_frozen_credentials(), "kms", region).add_auth(request)
        prepared = urllib.request.Request(self.endpoint + "/", data=body, method="POST",
                                          headers=dict(request.headers.items()))
        try:
            # AWS_CA_BUNDLE trusts a served store's own certificate, as it does for boto3
            context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
            with urllib.request.urlopen(prepared, timeout=_TIMEOUT, context=context) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                document = json.loads(error.read())
            except ValueError:
                document = {}
            code = str(document.get("__type", f"HTTP{error.code}")).rsplit("#", 1)[-1]
            raise KMSError(code, document.get("message") or document.get("Message") or error.reason) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise KmsplanError(f"cannot reach the store at {self.endpoint}: {getattr(error, 'reason', error)}",
                               hint="check --endpoint (or KMSPLAN_ENDPOINT) and that `kmsplan serve` runs there"
                               ) from None


class AwsBackend(RemoteBackend):
    """AWS KMS itself (`--aws`): the same KMS calls, to AWS's endpoints (or AWS_ENDPOINT_URL_KMS).

    AWS has no `KmsplanService`, so what the guards need besides KMS comes from elsewhere: the
    principal from `--principal` or STS GetCallerIdentity (a role session counts as its role, as
    key policies name roles); the principals and their IAM policies from `--aws-principals FILE`
    (the registry's YAML, since kmsplan does not read IAM), plus the caller and the account root;
    and no last use at all (it is in CloudTrail), so deletions count as "maybe in use".
    """

    def __init__(self, regions: tuple[str, ...], principal: str | None = None,
                 principals_file: Path | None = None) -> None:
        import boto3

        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_KMS") or "AWS KMS"
        self._session = boto3.Session()
        if self._session.get_credentials() is None:
            raise KmsplanError("no AWS credentials for AWS KMS",
                               hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is")
        self.principal = principal or self._caller()
        self.account = self.principal.split(":")[4]
        self.regions = tuple(regions)
        self._clients = {}
        entries = read_principals_file(principals_file) if principals_file else []
        principals = {p.arn: principal_of(p.arn, p.org_id, p.tags, p.policies) for p in entries}
        for arn in (f"arn:aws:iam::{self.account}:root", self.principal):
            principals.setdefault(arn, principal_of(arn, None, {}, ()))
        self._principals = list(principals.values())

    def _caller(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            arn = self._session.client("sts").get_caller_identity()["Arn"]
        except (BotoCoreError, ClientError) as error:
            raise KmsplanError(f"cannot ask STS who the AWS credentials are: {error}",
                               hint="pass --principal ARN (the role or user the credentials belong to)") from None
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
            return f"arn:aws:iam::{parts[4]}:role/{parts[5].split('/')[1]}"
        return arn

    def client(self, region: str) -> _Kms:
        if region not in self._clients:
            self._clients[region] = _Kms(self._session.client("kms", region_name=region))
        return self._clients[region]

    _unknown_principal = ("is not in --aws-principals", "add it to the file")

    def last_use(self, arns: Iterable[str]) -> None:
        return None

    def lookup_events(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        raise KmsplanError("AWS KMS keeps its audit trail in CloudTrail, not in kmsplan",
                           hint="query CloudTrail (`aws cloudtrail lookup-events`) for AWS KMS keys")

