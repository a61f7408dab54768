"""The stack language: YAML stacks validated offline and compiled into the typed `Stack` model.

    stack, findings = load_stack(["stacks/"])   # stack is None when any finding is an error

See docs/stack-reference.md for the language and the finding codes.
"""

from kmsplan.stack.compiler import discover, load_stack
from kmsplan.stack.findings import (
    CODES,
    ERROR,
    FORMAT_VERSION,
    WARNING,
    Finding,
    format_json,
    format_text,
    has_errors,
)
from kmsplan.stack.model import (
    AliasDecl,
    FrozenMap,
    GrantConstraints,
    GrantDecl,
    KeyPolicy,
    KeySpecDecl,
    ReplicaDecl,
    Rotation,
    Source,
    Stack,
    to_data,
)

__all__ = [
    "CODES", "ERROR", "FORMAT_VERSION", "WARNING", "AliasDecl", "Finding", "FrozenMap",
    "GrantConstraints", "GrantDecl", "KeyPolicy", "KeySpecDecl", "ReplicaDecl", "Rotation",
    "Source", "Stack", "discover", "format_json", "format_text", "has_errors", "load_stack",
    "to_data",
]
