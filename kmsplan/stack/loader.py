"""Bounded YAML loading that keeps a line and column for every node.

PyYAML's `safe_load` keeps the last of two duplicate keys, expands aliases without limit, and
its C composer recurses once per nesting level (a few hundred thousand `[` crash the process),
so this module drives libyaml's event stream (`CSafeLoader.get_event`) itself and builds the tree
with an explicit stack. That buys, in one pass:

* positions: mappings and sequences are `LocDict` / `LocList`, plain `dict` / `list` subclasses
  whose `locs` hold the 1-based (line, col) of each entry, so jsonschema and the rules read plain
  Python data while findings can still point at the exact key or value;
* bounds: input size (10 MiB), nesting depth (64) and alias expansion (the nodes reachable through
  aliases may not exceed the document's own nodes plus 100,000), each reported as one finding;
* duplicate keys as findings, `<<` merge keys, and YAML 1.1 scalars resolved as PyYAML's
  SafeLoader does, except that timestamps stay strings (`Version: 2012-10-17` is the string).

Mapping keys are always strings: the scalar's text, unresolved (`1: x` has the key "1").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from kmsplan.stack.findings import Finding, finding
from kmsplan.stack.scalars import resolve_plain, tagged

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
ALIAS_BUDGET = 100_000

Loc = tuple[int, int]


class LocDict(dict):  # type: ignore[type-arg]
    """A mapping with positions: `locs[key] = (key_line, key_col, value_line, value_col)`."""

    __slots__ = ("col", "line", "locs")

    def __init__(self, line: int = 1, col: int = 1) -> None:
        super().__init__()
        self.line = line
        self.col = col
        self.locs: dict[str, tuple[int, int, int, int]] = {}

    def key_loc(self, key: str) -> Loc:
        loc = self.locs.get(key)
        return (loc[0], loc[1]) if loc else (self.line, self.col)

    def value_loc(self, key: str) -> Loc:
        loc = self.locs.get(key)
        return (loc[2], loc[3]) if loc else (self.line, self.col)


class LocList(list):  # type: ignore[type-arg]
    """A sequence with positions: `locs[i] = (line, col)` of item i."""

    __slots__ = ("col", "line", "locs")

    def __init__(self, line: int = 1, col: int = 1) -> None:
        super().__init__()
        self.line = line
        self.col = col
        self.locs: list[Loc] = []

    def value_loc(self, index: int) -> Loc:
        return self.locs[index] if 0 <= index < len(self.locs) else (self.line, self.col)


@dataclass
class Document:
    """One loaded file: `data` is None when the file could not be read as one YAML document."""

    file: str
    data: Any
    findings: list[Finding] = field(default_factory=list)


def locate(root: Any, path: tuple[Any, ...] | list[Any], *, key: bool = False) -> Loc:
    """The position of the node at `path` (or of its key, with `key=True`); the deepest existing
    ancestor's position when the path leaves the tree, e.g. for a missing field."""
    node, loc = root, (getattr(root, "line", 1), getattr(root, "col", 1))
    last = len(path) - 1
    for i, step in enumerate(path):
        if isinstance(node, LocDict) and isinstance(step, str) and step in node.locs:
            loc = node.key_loc(step) if key and i == last else node.value_loc(step)
            node = node[step]
        elif isinstance(node, LocList) and isinstance(step, int) and 0 <= step < len(node):
            loc = node.value_loc(step)
            node = node[step]
        else:
            break
    return loc


# --- reading --------------------------------------------------------------------------------

def read_bytes(path: str | os.PathLike[str], file: str,
               limit: int = MAX_BYTES) -> tuple[bytes | None, list[Finding]]:
    """The file's bytes, or a finding saying why not; never reads more than `limit` + 1 bytes."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        return None, [finding(file, 1, 1, "E100", f"cannot read file: {err.strerror or err}")]
    if len(data) > limit:
        size = _size(path)
        return None, [finding(file, 1, 1, "E101",
                              f"file is {size} larger than the {limit // (1024 * 1024)} MiB "
                              "limit; a stack can be split into several files")]
    return data, []


def _size(path: str | os.PathLike[str]) -> str:
    try:
        return f"{os.path.getsize(path) / (1024 * 1024):.1f} MiB,"
    except OSError:
        return "more than"


def load_file(path: str | os.PathLike[str], file: str) -> Document:
    data, findings = read_bytes(path, file)
    if data is None:
        return Document(file, None, findings)
    return parse_yaml(data, file)


def parse_yaml(data: bytes, file: str) -> Document:
    """Parse one YAML document from `data`, reporting every problem as a finding."""
    text_problem = _text_problem(data, file)
    if text_problem is not None:
        return Document(file, None, [text_problem])
    builder = _Builder(file)
    loader = yaml.CSafeLoader(data)
    try:
        root = builder.run(loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        parts = [p for p in (err.context, err.problem) if p]
        message = "; ".join(parts) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if "maximum nesting depth" in message:  # libyaml >= 0.2.5 stops deep flow nesting itself
            builder.findings.append(finding(file, line, col, "E106", f"nesting deeper than {MAX_DEPTH} "
                                                                     "levels; a stack is never this deep"))
        else:
            builder.findings.append(finding(file, line, col, "E103", f"YAML syntax error: {message}"))
        root = None
    except yaml.reader.ReaderError as err:
        line, col = _offset_loc(data, err.position)
        builder.findings.append(finding(file, line, col, "E102", f"not YAML text: {err.reason}"))
        root = None
    except yaml.YAMLError as err:  # anything else libyaml reports, without a position
        builder.findings.append(finding(file, 1, 1, "E103", f"YAML syntax error: {err}"))
        root = None
    finally:
        loader.dispose()
    return Document(file, root, builder.findings)


def _text_problem(data: bytes, file: str) -> Finding | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return finding(file, 1, 1, "E102", "UTF-16 text; save the file as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _offset_loc(data, nul)
        return finding(file, line, col, "E102",
                       "binary data (a NUL byte); stack files are UTF-8 YAML text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line, col = _offset_loc(data, err.start)
        return finding(file, line, col, "E102",
                       f"not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8")
    return None


def _offset_loc(data: bytes, offset: int) -> Loc:
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, len(data[start:offset].decode("utf-8", "replace")) + 1


# --- the tree builder -----------------------------------------------------------------------

class _Abort(Exception):
    """A bound was hit; the finding is already recorded and the document is dropped."""


_NO_KEY = object()
_BAD_KEY = object()
_OPEN = object()


class _Frame:
    __slots__ = (
        "anchor",
        "is_map",
        "kcol",
        "key",
        "kline",
        "merge_key",
        "merges",
        "node",
        "size",
    )

    def __init__(self, node: Any, is_map: bool, anchor: str | None) -> None:
        self.node = node
        self.is_map = is_map
        self.anchor = anchor
        self.size = 1
        self.key: Any = _NO_KEY
        self.kline = self.kcol = 0
        self.merge_key = False
        self.merges: list[tuple[Any, int, int]] | None = None


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.anchors: dict[str, Any] = {}
        self.stack: list[_Frame] = []
        self.root: Any = _NO_KEY
        self.real = 0
        self.expanded = 0

    def add(self, line: int, col: int, code: str, message: str) -> None:
        self.findings.append(finding(self.file, line, col, code, message))

    def run(self, loader: Any) -> Any:
        get = loader.get_event
        stack = self.stack
        documents = 0
        try:
            while True:
                event = get()
                kind = type(event)
                if kind is ScalarEvent:
                    self.scalar(event)
                elif kind is MappingStartEvent or kind is SequenceStartEvent:
                    self.start(event, kind is MappingStartEvent)
                elif kind is MappingEndEvent or kind is SequenceEndEvent:
                    frame = stack.pop()
                    if frame.merges:
                        self.merge(frame)
                    if frame.anchor is not None:
                        self.anchors[frame.anchor] = (frame.node, frame.size)
                    self.attach(frame.node, frame.node.line, frame.node.col, frame.size, False)
                elif kind is AliasEvent:
                    self.alias(event)
                elif kind is DocumentStartEvent:
                    documents += 1
                    if documents > 1:
                        mark = event.start_mark
                        self.add(mark.line + 1, mark.column + 1, "E109",
                                 "a second YAML document ('---'); put one stack document in "
                                 "each file")
                        break
                elif kind is StreamEndEvent or event is None:
                    break
        except _Abort:
            return None
        if self.root is _NO_KEY or self.root is None:
            self.add(1, 1, "E110", "the file holds no YAML document; a stack file needs at "
                                   "least 'version', 'stack', 'account' and 'region'")
            return None
        return self.root

    def scalar(self, event: Any) -> None:
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        self.real += 1
        top = self.stack[-1] if self.stack else None
        value: Any
        if top is not None and top.is_map and top.key is _NO_KEY:
            value = event.value  # keys stay text
            merge = value == "<<" and event.implicit[0]
        else:
            merge = False
            tag = event.tag
            if tag is None:
                value = resolve_plain(event.value) if event.implicit[0] else event.value
            else:
                value, supported = tagged(event.value, tag)
                if not supported:
                    self.add(line, col, "E108", f"unsupported YAML tag '{tag}'; stacks use plain "
                                                "YAML (strings, numbers, booleans, lists, maps)")
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self.attach(value, line, col, 1, merge)

    def start(self, event: Any, is_map: bool) -> None:
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        if len(self.stack) >= MAX_DEPTH:
            self.add(line, col, "E106", f"nesting deeper than {MAX_DEPTH} levels; a stack is "
                                        "never this deep")
            raise _Abort
        tag = event.tag
        if tag is not None and tag not in ("!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            self.add(line, col, "E108", f"unsupported YAML tag '{tag}'")
        self.real += 1
        node = LocDict(line, col) if is_map else LocList(line, col)
        if event.anchor is not None:
            self.anchors[event.anchor] = _OPEN
        self.stack.append(_Frame(node, is_map, event.anchor))

    def alias(self, event: Any) -> None:
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        target = self.anchors.get(event.anchor)
        if target is None or target is _OPEN:
            what = "refers to itself" if target is _OPEN else "is not defined before this point"
            self.add(line, col, "E107", f"alias '*{event.anchor}' {what}")
            raise _Abort
        value, size = target
        self.expanded += size
        if self.expanded > ALIAS_BUDGET + self.real:
            self.add(line, col, "E105",
                     f"aliases expand to more than {ALIAS_BUDGET + self.real} nodes (a "
                     "\"billion laughs\" document?); anchors may be reused, not nested "
                     "exponentially")
            raise _Abort
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is _NO_KEY and not isinstance(value, str):
            self.add(line, col, "E111", f"alias '*{event.anchor}' used as a mapping key must "
                                        "name a string")
            value = _BAD_KEY
        self.attach(value, line, col, size, False)

    def attach(self, value: Any, line: int, col: int, size: int, merge: bool) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        if not top.is_map:
            top.node.append(value)
            top.node.locs.append((line, col))
            return
        if top.key is _NO_KEY:
            if isinstance(value, (LocDict, LocList)):
                self.add(line, col, "E111", "a mapping key must be a plain string, not a "
                                            "list or mapping")
                value = _BAD_KEY
            top.key, top.kline, top.kcol, top.merge_key = value, line, col, merge
            return
        key, top.key = top.key, _NO_KEY
        if key is _BAD_KEY:
            return
        node = top.node
        if top.merge_key:
            if top.merges is None:
                top.merges = []
            top.merges.append((value, line, col))
        elif key in node:
            first = node.locs[key]
            self.add(top.kline, top.kcol, "E104",
                     f"duplicate key '{key}' (first at line {first[0]}, column {first[1]}); "
                     "YAML would silently keep only one")
        else:
            node[key] = value
            node.locs[key] = (top.kline, top.kcol, line, col)

    def merge(self, frame: _Frame) -> None:
        """Apply `<<` merge keys: explicit keys win, then earlier merged mappings."""
        node = frame.node
        for value, line, col in frame.merges or ():
            sources = value if isinstance(value, LocList) else [value]
            for source in sources:
                if not isinstance(source, LocDict):
                    self.add(line, col, "E103",
                             "a '<<' merge key needs a mapping or a list of mappings")
                    continue
                for key, item in source.items():
                    if key not in node:
                        node[key] = item
                        node.locs[key] = source.locs[key]
