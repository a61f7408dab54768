"""Helpers for the reconciler tests: the principals they register, policy builders, and the real
CLI and store worker run in subprocesses.

(Kept out of conftest.py so test modules can import them by a name no other test folder uses.)
Everything here drives real stores (SoftHSM2 tokens + SQLite); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kmsplan.plan import Flags, LocalBackend, apply_plan, drift, load_valid_stack, plan_stack
from kmsplan.plan.live import LiveKey, LiveState, read_live
from kmsplan.plan.model import Change, Drift, Plan
from kmsplan.plan.remote import RemoteBackend
from kmsplan.server.credentials import create_access_key
from kmsplan.store import KeyStore
from kmsplan.store.principals import PrincipalEntry

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES = REPO / "examples" / "stacks"
WORKER = HERE / "plan_worker.py"

ACCOUNT = "111122223333"
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
HOME, AWAY, FAR = REGIONS
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


def role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


ADMIN = role("kms-admins")          # an administrator role with an identity policy allowing kms:*
APP = role("app")
BATCH = role("batch")
AUDITOR = role("auditor")
GHOST = role("ghost")               # never registered

_ALL_KMS = json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})

#: what the in-process tests register once: a superset every test may name
PRINCIPALS = [
    PrincipalEntry(ADMIN, None, {"team": "security"}, (_ALL_KMS,)),
    PrincipalEntry(APP, None, {"project": "app"}, ()),
    PrincipalEntry(BATCH, None, {}, ()),
    PrincipalEntry(AUDITOR, None, {}, ()),
]

PRINCIPALS_YAML = {"principals": [
    {"arn": ADMIN, "tags": {"team": "security"}, "policies": [json.loads(_ALL_KMS)]},
    {"arn": APP, "tags": {"project": "app"}}, {"arn": BATCH}, {"arn": AUDITOR},
]}


# --- stacks and policies ---------------------------------------------------------------------

def stack_doc(name: str, keys: dict[str, Any], region: str = HOME, **top: Any) -> dict[str, Any]:
    return {"version": 1, "stack": name, "account": ACCOUNT, "region": region, "keys": keys, **top}


def write_stack(folder: Path, doc: dict[str, Any], file_name: str = "stack.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def statement(principal: Any, actions: Any = "kms:*", sid: str | None = None, effect: str = "Allow",
              **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"Effect": effect, "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"}
    if sid:
        data = {"Sid": sid, **data}
    return {**data, **extra}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def root_policy(*more: dict[str, Any]) -> dict[str, Any]:
    """The root may do everything (IAM decides), plus `more`."""
    return policy(statement(ROOT, "kms:*", sid="EnableIAMPolicies"), *more)


def safe_name(text: str, limit: int = 40) -> str:
    """A stack or key name (letters, digits, '-') made from a test's name."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return cleaned[:limit].strip("-") or "t"


# --- in-process: one stack of one test on the session store ---------------------------------

class KitServer:
    """`kmsplan serve` on the session store, with an access key per principal made on first use."""

    def __init__(self, url: str, store: KeyStore) -> None:
        self.url, self.store = url, store
        self._keys: dict[str, tuple[str, str]] = {}

    def backend(self, principal: str) -> RemoteBackend:
        if principal not in self._keys:
            key, secret = create_access_key(self.store, principal)
            self._keys[principal] = (key.access_key_id, secret)
        return RemoteBackend(self.url, HOME, access_key=self._keys[principal])


class Kit:
    """One stack of one test: write it, plan it, apply it, read what is live — through the store
    opened here, or, under KMSPLAN_TEST_SERVED, through `kmsplan serve` on it (`server`)."""

    _folders = itertools.count()

    def __init__(self, store: KeyStore, folder: Path, name: str, server: KitServer | None = None) -> None:
        self.store, self.folder, self.name, self.server = store, folder, name, server
        self.paths: list[str] = []

    # -- the stack ----------------------------------------------------------------------
    def alias(self, short: str) -> str:
        return f"alias/{self.name}/{short}"

    def write(self, keys: dict[str, Any], region: str = HOME, **top: Any) -> list[str]:
        """Write the stack (one file, in a new folder each time so saved paths stay distinct)."""
        folder = self.folder / f"v{next(self._folders)}"
        self.paths = [str(write_stack(folder, stack_doc(self.name, keys, region, **top)))]
        return self.paths

    def backend(self, principal: str | None = None) -> LocalBackend | RemoteBackend:
        if self.server is not None:
            return self.server.backend(principal or ROOT)
        return LocalBackend(self.store, principal or ROOT)

    # -- plan and apply -----------------------------------------------------------------
    def plan(self, keys: dict[str, Any] | None = None, *, allow_delete: tuple[str, ...] = (),
             recently_used: bool = False, recent_days: int = 30, principal: str | None = None,
             sign: bool = False, **top: Any) -> Plan:
        if keys is not None:
            self.write(keys, **top)
        flags = Flags(tuple(sorted(allow_delete)), recently_used, recent_days)
        return plan_stack(load_valid_stack(self.paths), self.backend(principal), flags, sign=sign)

    def apply(self, keys: dict[str, Any] | None = None, **options: Any) -> Plan:
        """Plan (which must have no guard errors) and apply; the plan that was applied."""
        made = self.plan(keys, **options)
        assert not made.has_errors, [f.to_data() for f in made.findings if f.is_error]
        apply_plan(made, self.backend(options.get("principal")), saved=False)
        return made

    def drift(self, principal: str | None = None) -> list[Drift]:
        return drift(load_valid_stack(self.paths), self.backend(principal))

    def assert_converged(self, principal: str | None = None) -> None:
        """A new plan changes nothing and drift reports nothing."""
        again = self.plan(principal=principal)
        assert not again.effective, [c.to_data() for c in again.effective]
        assert not again.has_errors, [f.to_data() for f in again.findings]
        assert self.drift(principal) == [], [d.to_data() for d in self.drift(principal)]

    # -- the live store -----------------------------------------------------------------
    def client(self, region: str = HOME, principal: str = ROOT):
        return self.store.client(region=region, principal=principal)

    def live(self) -> LiveState:
        return read_live(self.backend().clients(), self.name)

    def copies(self, address: str) -> list[LiveKey]:
        return [key for key in self.live().keys if key.address == address]

    def key(self, address: str) -> LiveKey:
        found = self.copies(address)
        assert len(found) == 1, f"{address}: {len(found)} live keys"
        return found[0]


def change(plan: Plan, address: str) -> Change:
    found = [c for c in plan.changes if c.address == address]
    assert len(found) == 1, (address, [c.address for c in plan.changes])
    return found[0]


def kit_name(nodeid: str, name: str) -> str:
    """Readable and unique: the test's name, then a hash of its node id."""
    return f"{safe_name(name, 44)}-{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"


# --- subprocesses ----------------------------------------------------------------------------

def kmsplan(*args: str, store: Path | None = None, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m kmsplan ARGS` as a user runs it (KMSPLAN_STORE set to `store`, no colour)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("KMSPLAN_STORE", "KMSPLAN_PRINCIPAL")}
    full_env["NO_COLOR"] = "1"
    if store is not None:
        full_env["KMSPLAN_STORE"] = str(store)
    full_env.update(env or {})
    result = subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True,
                            cwd=cwd, env=full_env, timeout=timeout, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def worker(*args: str, check: bool = True) -> Any:
    """Run plan_worker.py (a store opened in a process of its own); its JSON answer."""
    result = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=300,
                            check=False)
    if check:
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    return result


def new_store(path: Path, regions: tuple[str, ...] = REGIONS, principals: dict | None = None) -> Path:
    """A store of its own made through the CLI, with PRINCIPALS_YAML (or `principals`) registered."""
    made = kmsplan("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", ",".join(regions))
    assert made.returncode == 0, made.stderr
    file = path.parent / f"{path.name}-principals.yaml"
    file.write_text(yaml.safe_dump(principals or PRINCIPALS_YAML), encoding="utf-8")
    registered = kmsplan("store", "principals", "apply", str(file), store=path)
    assert registered.returncode == 0, registered.stderr
    return path


def assert_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1 with an `Error:` line naming every word, and no traceback; the whole stderr."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors, result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} not in {result.stderr!r}"
    return result.stderr


@dataclass(frozen=True)
class Served:
    """`kmsplan serve` running on a CLI test module's store, with an access key per principal."""

    url: str
    keys: dict[str, tuple[str, str]]  # principal ARN -> (access key id, secret)

    def env(self, principal: str) -> dict[str, str]:
        """What a CI runner sets to reach the store as `principal` (no AWS config files read)."""
        key_id, secret = self.keys[principal]
        return {"KMSPLAN_ENDPOINT": self.url, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": HOME, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}


class CliStack:
    """One stack of one subprocess test: a folder with stack.yaml, run against `store` — opened
    by the CLI itself, or, when `served`, reached over `--endpoint` as a CI runner reaches it."""

    def __init__(self, store: Path, folder: Path, name: str, served: Served | None = None) -> None:
        self.store, self.folder, self.name, self.served = store, folder, name, served
        self.path = folder / "stack.yaml"

    def alias(self, short: str) -> str:
        return f"alias/{self.name}/{short}"

    def write(self, keys: dict[str, Any], region: str = HOME, **top: Any) -> Path:
        return write_stack(self.folder, stack_doc(self.name, keys, region, **top))

    def run(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        if self.served is None:
            return kmsplan(*args, store=self.store, cwd=self.folder, **options)
        # Over the network the access key is the principal: `--principal P` becomes P's key
        # (an unregistered P has none and stays an argument, for the CLI to refuse).
        args_list, principal = list(args), ROOT
        if "--principal" in args_list:
            at = args_list.index("--principal")
            if args_list[at + 1] in self.served.keys:
                principal = args_list[at + 1]
                del args_list[at:at + 2]
        env = {**self.served.env(principal), **options.pop("env", {})}
        return kmsplan(*args_list, cwd=self.folder, env=env, **options)

    def plan(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("plan", str(self.path), *extra)

    def apply(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", str(self.path), "--auto-approve", *extra)

    def stack_keys(self) -> list[dict[str, Any]]:
        """Every key tagged for this stack, in every region, read by a worker process."""
        return worker("keys", str(self.store), self.name)

    def call(self, region: str, operation: str, **params: Any) -> dict[str, Any]:
        return worker("call", str(self.store), region, operation, json.dumps(params))

    def key_id(self, address: str) -> str:
        [found] = [k["key_id"] for k in self.stack_keys() if k["address"] == address]
        return found


def progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^\[\d+/\d+\] ", line)]
