"""The identity registry: which IAM principals exist, with their account, organization, tags and
identity policies. AWS KMS authorizes against IAM; this store has no IAM, so it keeps the part
authorization needs.

`kmsplan store principals apply FILE.yaml` replaces the registry from a file:

    principals:
      - arn: arn:aws:iam::111122223333:role/payments-app
        org_id: o-exampleorgid          # optional
        tags: {project: payments}       # optional: aws:PrincipalTag/...
        policies:                       # optional: IAM identity policy documents
          - Version: "2012-10-17"
            Statement:
              - {Effect: Allow, Action: ["kms:Decrypt"], Resource: "*"}

The store account's root (`arn:aws:iam::ACCOUNT:root`) always exists and, as in AWS, is not
limited by identity policies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from kmsplan.errors import KmsplanError
from kmsplan.policy import Principal, check_policy_document, parse_policy, parse_policy_cached
from kmsplan.store.db import Metadata

ROLE_OR_USER = re.compile(r"^arn:aws:iam::\d{12}:(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)\Z")
ORG_ID = re.compile(r"^o-[a-z0-9]{10,32}\Z")
_FIELDS = {"arn", "org_id", "tags", "policies"}
MAX_FILE_BYTES = 5 * 1024 * 1024
_ROOT_POLICY = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})


@dataclass(frozen=True)
class PrincipalEntry:
    """One principal as the registry stores it (identity policies as canonical JSON text)."""

    arn: str
    org_id: str | None
    tags: dict[str, str]
    policies: tuple[str, ...]


def read_principals_file(path: Path) -> list[PrincipalEntry]:
    """Parse and check a principals file; every problem is reported at once, nothing is applied."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise KmsplanError(f"{path} is larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise KmsplanError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise KmsplanError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    problems: list[str] = []
    if not isinstance(document, dict) or set(document) != {"principals"} or not isinstance(document["principals"], list):
        raise KmsplanError(f"{path}: expected a mapping with one key, 'principals', holding a list",
                           hint="see `kmsplan store principals apply --help` for the file's shape")
    entries, seen = [], set()
    for index, item in enumerate(document["principals"]):
        where = f"{path}: principals[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with arn, org_id, tags, policies")
            continue
        for unknown in sorted(set(item) - _FIELDS, key=str):
            problems.append(f"{where}: unknown field {unknown!r} (fields: {', '.join(sorted(_FIELDS))})")
        arn = item.get("arn")
        if not isinstance(arn, str) or not ROLE_OR_USER.match(arn):
            problems.append(f"{where}.arn: {arn!r} is not an IAM role, user or root ARN "
                            "(arn:aws:iam::111122223333:role/name)")
            continue
        if arn in seen:
            problems.append(f"{where}.arn: {arn} is listed twice")
        seen.add(arn)
        org_id = item.get("org_id")
        if org_id is not None and (not isinstance(org_id, str) or not ORG_ID.match(org_id)):
            problems.append(f"{where}.org_id: {org_id!r} is not an organization id (o-exampleorgid)")
        tags = item.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            problems.append(f"{where}.tags: expected a mapping of strings to strings (quote numbers)")
            tags = {}
        policies = item.get("policies") or []
        if not isinstance(policies, list):
            problems.append(f"{where}.policies: expected a list of IAM policy documents")
            policies = []
        texts = []
        for number, policy in enumerate(policies):
            found = check_policy_document(policy, kind="identity")
            for problem in found:
                at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.path)
                problems.append(f"{where}.policies[{number}]{at}: {problem.code} {problem.message}")
            if not found:
                texts.append(parse_policy(policy, kind="identity").text)
        entries.append(PrincipalEntry(arn, org_id, dict(tags), tuple(texts)))
    if problems:
        raise KmsplanError(f"{len(problems)} problem(s) in {path}; nothing was applied:\n  " + "\n  ".join(problems))
    return entries


def principal_of(arn: str, org_id: str | None, tags: dict[str, str], policies: Iterable[str]) -> Principal:
    """A principal for the evaluator: an account root also holds the allow-everything identity
    policy, as AWS lets a root do whatever the key policy delegates to IAM."""
    texts = [_ROOT_POLICY, *policies] if arn.endswith(":root") else list(policies)
    return Principal(arn, org_id, tags, tuple(parse_policy_cached(text, "identity") for text in texts))


class Registry:
    """Principals by ARN, read from the database and cached until any process changes it."""

    def __init__(self, meta: Metadata, account: str) -> None:
        self._meta = meta
        self.root = f"arn:aws:iam::{account}:root"
        self._cache: dict[str, Principal] | None = None

    def invalidate(self) -> None:
        self._cache = None

    def _load(self) -> dict[str, Principal]:
        if self._cache is None:
            principals = {self.root: principal_of(self.root, None, {}, ())}
            for arn, org_id, tags, policies in self._meta.query("SELECT arn, org_id, tags, policies FROM principals"):
                principals[arn] = principal_of(arn, org_id, json.loads(tags), json.loads(policies))
            self._cache = principals
        return self._cache

    def get(self, arn: str) -> Principal | None:
        """The principal, or for a role session (arn:aws:sts::ACCOUNT:assumed-role/ROLE/NAME) its
        registered role acting under the session's ARN, as AWS authorizes a session as its role."""
        principals = self._load()
        found = principals.get(arn)
        if found is None and ":assumed-role/" in arn:
            parts = arn.split(":", 5)
            names = parts[5].split("/") if len(parts) == 6 else []
            if len(names) == 3 and parts[2] == "sts":
                role = next((p for p in principals.values() if p.account == parts[4]
                             and p.arn.split(":", 5)[5].startswith("role/")
                             and p.arn.rsplit("/", 1)[1] == names[1]), None)
                found = replace(role, arn=arn) if role is not None else None
        return found

    def all(self) -> list[Principal]:
        return [self._load()[arn] for arn in sorted(self._load())]

    def known_arns(self) -> set[str]:
        """Registered ARNs plus the roots of every account they belong to (as AWS knows accounts)."""
        arns = set(self._load())
        return arns | {f"arn:aws:iam::{arn.split(':')[4]}:root" for arn in arns}

    def replace(self, entries: list[PrincipalEntry]) -> None:
        with self._meta.write() as conn:
            conn.execute("DELETE FROM principals")
            conn.executemany("INSERT INTO principals VALUES (?, ?, ?, ?)",
                             [(e.arn, e.org_id, json.dumps(e.tags, sort_keys=True), json.dumps(list(e.policies)))
                              for e in entries])
        self.invalidate()
