"""What the rules share: one stack file after the schema (`Unit`), the merged stack-wide
settings (`StackContext`), values that remember where they were written (`Setting`), and the
tag-key rule that applies to defaults and keys alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kmsplan.stack.loader import Loc, LocDict
from kmsplan.stack.policies import PolicyFiles

RESERVED_TAG_PREFIXES = ("aws:", "kmsplan:")
MAX_TAGS = 50
MAX_CONTEXT_VALUE = 384
DEFAULT_WINDOW = 30
DEFAULT_PERIOD = 365

Report = Callable[[str, Loc, str, str], None]
Path = tuple[Any, ...]


@dataclass(frozen=True)
class Setting:
    """A value with where it was written, for defaults that can come from any file."""

    value: Any
    file: str
    loc: Loc
    where: str


@dataclass
class Unit:
    """One stack file after loading and the schema: `errors` are the paths the schema
    rejected, `broken` those paths and all their ancestors."""

    file: str  # as shown in findings
    path: str  # on disk
    root: LocDict
    errors: set[Path] = field(default_factory=set)
    broken: set[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.broken = {p[:i] for p in self.errors for i in range(len(p) + 1)}

    def bad(self, path: Path) -> bool:
        """Whether the schema rejected anything at or below `path`."""
        return path in self.broken


@dataclass
class StackContext:
    name: str
    account: str
    region: str
    variables: dict[str, str]
    defaults: dict[str, Setting]  # deletion_window_days, protect, multi_region, rotation.*
    default_tags: dict[str, Setting]
    report: Report
    policy_files: PolicyFiles


def where_of(path: Path) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def tag_key_problem(tag: str) -> tuple[str, str] | None:
    """(code, message) when a tag key is too short, too long (E503) or reserved (E506)."""
    if not 1 <= len(tag) <= 128:
        return "E503", f"tag key is {len(tag)} characters; tag keys are 1-128 characters"
    for prefix in RESERVED_TAG_PREFIXES:
        if tag.lower().startswith(prefix):
            why = ("kmsplan writes kmsplan:stack and kmsplan:address itself"
                   if prefix == "kmsplan:" else "AWS reserves it")
            return "E506", f"tag key '{tag}' uses the reserved prefix '{prefix}'; {why}"
    return None
