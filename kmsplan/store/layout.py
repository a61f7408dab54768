"""A store on disk: its folder layout, its configuration, and `store init`.

    DIR/store.json       account, regions, PKCS#11 module, administrator, transport public points
    DIR/pins.json        token PINs (mode 0600; never logged, never printed)
    DIR/softhsm2.conf    SoftHSM2's configuration, pointing at DIR/tokens (embedded default only)
    DIR/tokens/          SoftHSM2's token folder: one token per region, labelled kmsplan-REGION
    DIR/metadata.db      SQLite metadata
    DIR/audit.log        hash-chained audit log (and audit.log.head)
    DIR/store.lock       the write lock every process takes

Back up DIR as a whole, with no process writing: token and database must stay together.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kmsplan.errors import KmsplanError

FORMAT = 1
SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
REGION_PATTERN = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d\Z")
ACCOUNT_PATTERN = re.compile(r"^\d{12}\Z")


def default_store_dir() -> Path:
    return Path(os.environ.get("KMSPLAN_STORE", ".kmsplan"))


def token_label(region: str) -> str:
    return f"kmsplan-{region}"


def find_softhsm() -> str | None:
    return next((path for path in SOFTHSM_CANDIDATES if os.path.exists(path)), None)


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    account: str
    regions: tuple[str, ...]
    pkcs11_module: str
    softhsm: bool
    administrator: str
    transport_points: dict[str, str]  # region -> hex EC point of the token's agreement key

    @property
    def softhsm_conf(self) -> Path | None:
        return self.path / "softhsm2.conf" if self.softhsm else None

    @classmethod
    def load(cls, path: Path) -> "StoreConfig":
        config_file = path / "store.json"
        if not config_file.is_file():
            raise KmsplanError(
                f"no kmsplan store at {path}",
                hint="create one with `kmsplan store init --store DIR --account ID --regions R1,R2` "
                "or point KMSPLAN_STORE at an existing store",
            )
        try:
            data = json.loads(config_file.read_text())
            return cls(
                path=path,
                account=data["account"],
                regions=tuple(data["regions"]),
                pkcs11_module=data["pkcs11_module"],
                softhsm=data["softhsm"],
                administrator=data["administrator"],
                transport_points=data["transport_points"],
            )
        except (ValueError, KeyError, TypeError) as error:
            raise KmsplanError(f"{config_file} is damaged ({error})", hint="restore the store from a backup") from None

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "account": self.account,
            "regions": list(self.regions),
            "pkcs11_module": self.pkcs11_module,
            "softhsm": self.softhsm,
            "administrator": self.administrator,
            "transport_points": self.transport_points,
        }
        (self.path / "store.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def pins(self) -> dict[str, str]:
        try:
            return json.loads((self.path / "pins.json").read_text())
        except (OSError, ValueError) as error:
            raise KmsplanError(f"cannot read the token PINs in {self.path / 'pins.json'} ({type(error).__name__})",
                               hint="check the file's owner and mode (0600), or restore it from a backup") from None


def parse_regions(text: str) -> tuple[str, ...]:
    regions = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [region for region in regions if not REGION_PATTERN.match(region)]
    if not regions or bad:
        raise KmsplanError(
            f"invalid region list {text!r}" + (f": {', '.join(bad)} is not a region name" if bad else ""),
            hint="give AWS region names separated by commas, e.g. --regions eu-west-1,eu-central-1",
        )
    return regions


def init_store(path: Path, account: str, regions: tuple[str, ...], pkcs11_module: str | None,
               administrator: str | None) -> StoreConfig:
    """Create a store: tokens (SoftHSM2) or token check (other modules), PINs, database, audit log."""
    from kmsplan.store.audit import AuditLog
    from kmsplan.store.db import Metadata, secure_file
    from kmsplan.store.hsm import Token, TokenError, load_library

    if not ACCOUNT_PATTERN.match(account):
        raise KmsplanError(f"invalid account id {account!r}", hint="an AWS account id is 12 digits, e.g. 111122223333")
    if (path / "store.json").exists():
        raise KmsplanError(f"{path} already holds a kmsplan store", hint="choose another --store folder")
    if path.exists() and any(path.iterdir()):
        raise KmsplanError(f"{path} exists and is not empty", hint="choose a new or empty folder for --store")
    administrator = administrator or f"arn:aws:iam::{account}:root"
    module = pkcs11_module or find_softhsm()
    if module is None:
        raise KmsplanError("SoftHSM2 is not installed", hint="install it (apt-get install softhsm2) or give "
                           "--pkcs11-module PATH for your HSM's PKCS#11 library")
    if not os.path.exists(module):
        raise KmsplanError(f"PKCS#11 module {module} does not exist", hint="give the path of your HSM's .so file")
    softhsm = "softhsm" in os.path.basename(module).lower()

    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    try:
        if softhsm:
            pins = _init_softhsm_tokens(path, regions)
        else:
            pin = os.environ.get("KMSPLAN_TOKEN_PIN")
            if not pin:
                raise KmsplanError("KMSPLAN_TOKEN_PIN is not set",
                                   hint=f"create tokens labelled {token_label(regions[0])} (one per region) with "
                                   "your HSM's tools and export their user PIN as KMSPLAN_TOKEN_PIN")
            pins = {region: pin for region in regions}
        secure_file(path / "pins.json", json.dumps(pins))
        conf = str(path / "softhsm2.conf") if softhsm else None
        loaded = load_library(module, conf)
        points = {}
        for region in regions:
            points[region] = Token(loaded, token_label(region), pins[region]).create_agreement_key().hex()
        config = StoreConfig(path, account, regions, module, softhsm, administrator, points)
        meta = Metadata(path / "metadata.db", path / "store.lock")
        meta.ensure_schema()
        meta.close()
        AuditLog(path / "audit.log").close()
        config.save()
        return config
    except (TokenError, OSError) as error:
        _remove_partial(path)
        raise KmsplanError(f"store init failed: {error}", hint="check the PKCS#11 module and token set-up") from None
    except KmsplanError:
        _remove_partial(path)
        raise


def _init_softhsm_tokens(path: Path, regions: tuple[str, ...]) -> dict[str, str]:
    tokens = path / "tokens"
    tokens.mkdir(mode=0o700)
    conf = path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens.resolve()}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\nslots.mechanisms = ALL\nlibrary.reset_on_fork = false\n"
    )
    util = shutil.which("softhsm2-util")
    if util is None:
        raise KmsplanError("softhsm2-util is not on PATH", hint="install SoftHSM2: apt-get install softhsm2")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf.resolve())}
    pins = {}
    for region in regions:
        pin, so_pin = secrets.token_hex(16), secrets.token_hex(16)
        result = subprocess.run(
            [util, "--init-token", "--free", "--label", token_label(region), "--pin", pin, "--so-pin", so_pin],
            env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            # The PINs are on the command line we ran, never in what we print.
            raise KmsplanError(f"softhsm2-util could not create the token for {region}: {result.stderr.strip()}")
        pins[region] = pin
    return pins


def _remove_partial(path: Path) -> None:
    for name in ("store.json", "pins.json", "softhsm2.conf", "metadata.db", "metadata.db-wal", "metadata.db-shm", "metadata.generation",
                 "audit.log", "audit.log.head", "store.lock"):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / "tokens", ignore_errors=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
