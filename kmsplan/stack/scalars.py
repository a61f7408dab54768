"""Plain YAML scalars resolved as PyYAML's SafeLoader resolves them (YAML 1.1: `yes` is
true, `0x1F` is 31, `~` is null), with one deliberate difference: timestamps stay strings, so
`Version: 2012-10-17` is the text a policy needs, not a date.

The loader calls `resolve_plain` for every plain scalar value; the first character rules most
of them out at once, and short results are cached.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

_STR = "tag:yaml.org,2002:str"
_CONSTRUCTOR = SafeConstructor()
_BUILD = {
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
}
_RESOLVERS: dict[str, list[tuple[str, Any]]] = {
    first: [(tag, rx) for tag, rx in resolvers if tag in _BUILD]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items() if first
}
_RESOLVERS = {first: rs for first, rs in _RESOLVERS.items() if rs}
_MISSING = object()
_cache: dict[str, Any] = {}


def resolve_plain(value: str) -> Any:
    """A plain scalar's value under YAML 1.1 (as SafeLoader), timestamps kept as strings."""
    if not value:
        return None
    resolvers = _RESOLVERS.get(value[0])
    if resolvers is None:
        return value
    hit = _cache.get(value, _MISSING)
    if hit is not _MISSING:
        return hit
    result: Any = value
    for tag, regexp in resolvers:
        if regexp.match(value):
            result = _BUILD[tag](ScalarNode(tag, value))
            break
    if len(_cache) < 4096 and len(value) < 64:
        _cache[value] = result
    return result


def tagged(value: str, tag: str) -> tuple[Any, bool]:
    """A scalar with an explicit tag: (value, supported)."""
    if tag in ("!", _STR):
        return value, True
    build = _BUILD.get(tag)
    if build is None:
        return value, False
    try:
        return build(ScalarNode(tag, value)), True
    except (ValueError, KeyError, yaml.YAMLError):
        return value, False
