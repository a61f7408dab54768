"""From paths to a `Stack`: find the files, load them, check structure, merge the files of one
stack, run the rules, build the model. Every problem becomes a finding; only a path that does not
exist (or a folder without stack files) is a `KmsplanError`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kmsplan.errors import KmsplanError
from kmsplan.stack.context import Setting, StackContext, Unit, tag_key_problem
from kmsplan.stack.findings import Finding, finding, has_errors
from kmsplan.stack.loader import Document, Loc, LocDict, load_file
from kmsplan.stack.model import FrozenMap, KeySpecDecl, Source, Stack
from kmsplan.stack.policies import PolicyFiles, inside
from kmsplan.stack.rules import KeyBuilder
from kmsplan.stack.schema import check_structure

HEADER = ("version", "stack", "account", "region")
STACK_SUFFIXES = (".yaml", ".yml")
_DEFAULT_SCALARS = ("deletion_window_days", "protect", "multi_region")


def discover(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(path on disk, path as shown) of every stack file: the files named, and every *.yaml /
    *.yml under the folders named (recursively, skipping hidden folders)."""
    found: dict[str, str] = {}
    for given in paths:
        text = os.fspath(given)
        if os.path.isdir(text):
            before = len(found)
            for folder, subfolders, names in os.walk(text):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                for name in sorted(names):
                    if name.endswith(STACK_SUFFIXES) and not name.startswith("."):
                        path = os.path.join(folder, name)
                        found.setdefault(os.path.realpath(path), os.path.normpath(path))
            if len(found) == before:
                raise KmsplanError(f"no *.yaml or *.yml files under {text}",
                                   hint="point kmsplan at a stack file or a folder of them")
        elif os.path.exists(text):
            found.setdefault(os.path.realpath(text), os.path.normpath(text))
        else:
            raise KmsplanError(f"{text}: no such file or folder",
                               hint="check the path; kmsplan reads stack files and folders")
    return sorted(found.items(), key=lambda item: item[1])


def load_stack(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
               ) -> tuple[Stack | None, list[Finding]]:
    """Validate the stack in `paths` (files and folders). Returns the model and the findings,
    sorted; the model is None when any finding is an error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = discover(paths)
    roots = tuple(os.path.realpath(p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))) for p in paths)
    with without_gc_pauses():
        return _load(files, roots)


@contextmanager
def without_gc_pauses() -> Iterator[None]:
    """Loading a stack, and planning it, build millions of long-lived, acyclic objects; the cyclic
    collector would walk them over and over (15-20% of the time at 10,000 keys, and growing with
    the heap) without ever freeing one. Nests; restores the collector's state."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(files: list[tuple[str, str]], roots: tuple[str, ...]) -> tuple[Stack | None, list[Finding]]:
    documents = [load_file(real, shown) if inside(real, roots) else
                 Document(shown, None, [finding(shown, 1, 1, "E704", f"{shown} is a link to a file outside the "
                                                "folder(s) the stack was given in; kmsplan reads no file outside "
                                                "the stack")])
                 for real, shown in files]
    policy_documents = _referenced_policy_files(files, documents)
    findings: list[Finding] = []
    units: list[Unit] = []
    for (real, _), document in zip(files, documents):
        if real in policy_documents:
            continue  # a YAML key policy another file points at, not a stack file
        findings.extend(document.findings)
        if document.data is None:
            continue
        structural, errors = check_structure(document.data, document.file)
        findings.extend(structural)
        units.append(Unit(document.file, real, document.data, errors))
    stack_files = tuple(d.file for (real, _), d in zip(files, documents)
                        if real not in policy_documents)
    stack, more = compile_units(units, stack_files, PolicyFiles(policy_documents, roots),
                                complete=len(units) == len(stack_files))
    findings = sorted(set(findings + more))
    return (None if has_errors(findings) else stack), findings


def _referenced_policy_files(files: list[tuple[str, str]],
                             documents: list[Document]) -> dict[str, Document]:
    """The loaded YAML files some stack file names in `policy_file:`."""
    by_path = {real: document for (real, _), document in zip(files, documents)}
    referenced: dict[str, Document] = {}
    for (real, _), document in zip(files, documents):
        keys = document.data.get("keys") if isinstance(document.data, dict) else None
        for key in (keys.values() if isinstance(keys, dict) else ()):
            replicas = key.get("replicas") if isinstance(key, dict) else None
            owners = [key] + (list(replicas.values()) if isinstance(replicas, dict) else [])
            for owner in owners:
                reference = owner.get("policy_file") if isinstance(owner, dict) else None
                if isinstance(reference, str):
                    target = os.path.realpath(os.path.join(os.path.dirname(real), reference))
                    if target in by_path and target != real:
                        referenced[target] = by_path[target]
    return referenced


def compile_units(units: list[Unit], files: tuple[str, ...], policy_files: PolicyFiles,
                  complete: bool = True) -> tuple[Stack | None, list[Finding]]:
    """Merge the files of one stack and build its keys. `complete` is False when some file
    could not be read; references to variables it might define are then not reported."""
    findings: list[Finding] = []
    usable = [u for u in units if isinstance(u.root, LocDict)
              and all(h in u.root and not u.bad((h,)) for h in HEADER)]
    complete = complete and len(usable) == len(units) and not any(u.bad(("vars",)) for u in units)

    def report(file: str, loc: Loc, code: str, message: str) -> None:
        if code == "E303" and not complete:
            return  # the variable may be defined in the part that could not be read
        findings.append(finding(file, loc[0], loc[1], code, message))

    if not usable:
        return None, findings
    first = usable[0]
    header = {h: first.root[h] for h in HEADER}
    for unit in usable[1:]:
        for h in HEADER:
            if unit.root[h] != header[h]:
                report(unit.file, unit.root.value_loc(h), "E300",
                       f"{h}: this file says {unit.root[h]!r} but {first.file} says "
                       f"{header[h]!r}; all files of one stack must agree")
    variables = _merge_vars(usable, report)
    defaults, default_tags = _merge_defaults(usable, report)
    ctx = StackContext(header["stack"], header["account"], header["region"], variables,
                       defaults, default_tags, report, policy_files)
    keys = [KeyBuilder(ctx, unit, name, raw, source).build()
            for unit, name, raw, source in _declared_keys(usable, report)]
    _check_alias_names(keys, report)
    stack = Stack(header["stack"], header["account"], header["region"], header["version"],
                  tuple(sorted(keys, key=lambda k: k.name)), files, FrozenMap(variables))
    return stack, findings


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge_vars(units: list[Unit], report: Any) -> dict[str, str]:
    merged: dict[str, Setting] = {}
    for unit in units:
        block = unit.root.get("vars")
        if not isinstance(block, LocDict):
            continue
        for name, value in block.items():
            if unit.bad(("vars", name)):
                continue
            setting = Setting(_scalar_text(value), unit.file, block.value_loc(name),
                              f"vars.{name}")
            _merge_one(merged, name, setting, report)
    return {name: setting.value for name, setting in merged.items()}


def _merge_one(merged: dict[str, Setting], name: str, setting: Setting, report: Any) -> None:
    """Keep the first setting; a different value elsewhere is E304."""
    earlier = merged.get(name)
    if earlier is None:
        merged[name] = setting
    elif earlier.value != setting.value:
        report(setting.file, setting.loc, "E304",
               f"{setting.where}: set to {setting.value!r} here but to {earlier.value!r} at "
               f"{earlier.file}:{earlier.loc[0]}:{earlier.loc[1]}; a stack has one value for it")


def _merge_defaults(units: list[Unit], report: Any) -> tuple[dict[str, Setting],
                                                             dict[str, Setting]]:
    defaults: dict[str, Setting] = {}
    tags: dict[str, Setting] = {}
    for unit in units:
        block = unit.root.get("defaults")
        if not isinstance(block, LocDict) or ("defaults",) in unit.errors:
            continue
        for name in _DEFAULT_SCALARS:
            if name in block and not unit.bad(("defaults", name)):
                _merge_one(defaults, name, Setting(block[name], unit.file,
                                                   block.value_loc(name), f"defaults.{name}"),
                           report)
        rotation = block.get("rotation")
        if isinstance(rotation, LocDict) and ("defaults", "rotation") not in unit.errors:
            for name in ("enabled", "period_days"):
                if name in rotation and not unit.bad(("defaults", "rotation", name)):
                    _merge_one(defaults, f"rotation.{name}",
                               Setting(rotation[name], unit.file, rotation.value_loc(name),
                                       f"defaults.rotation.{name}"), report)
        block_tags = block.get("tags")
        if isinstance(block_tags, LocDict) and ("defaults", "tags") not in unit.errors:
            for tag, value in block_tags.items():
                if unit.bad(("defaults", "tags", tag)):
                    continue
                where = f"defaults.tags.{tag}"
                problem = tag_key_problem(tag)
                if problem is not None:
                    report(unit.file, block_tags.key_loc(tag), problem[0], f"{where}: {problem[1]}")
                else:
                    _merge_one(tags, tag, Setting(value, unit.file, block_tags.value_loc(tag),
                                                  where), report)
    return defaults, tags


def _declared_keys(units: list[Unit], report: Any) -> list[tuple[Unit, str, LocDict, Source]]:
    """Every key once, in file order; a name declared again (in any file) is E301."""
    seen: dict[str, Source] = {}
    out = []
    for unit in units:
        keys = unit.root.get("keys")
        if not isinstance(keys, LocDict) or ("keys",) in unit.errors:
            continue
        for name, raw in keys.items():
            source = Source(unit.file, *keys.key_loc(name))
            if name in seen:
                report(unit.file, keys.key_loc(name), "E301",
                       f"keys.{name}: key '{name}' is already defined at {seen[name]}; key "
                       "names are unique across the files of a stack")
                continue
            seen[name] = source
            if ("keys", name) in unit.errors:
                continue
            if raw is None:  # `name:` with nothing under it: a key with every default
                raw = LocDict(*keys.value_loc(name))
            out.append((unit, name, raw, source))
    return out


def _check_alias_names(keys: list[KeySpecDecl], report: Any) -> None:
    """One alias name per region across the whole stack (replica aliases in their region)."""
    seen: dict[tuple[str, str], Any] = {}
    for key in keys:
        for alias in key.aliases + tuple(a for r in key.replicas for a in r.aliases):
            first = seen.setdefault((alias.region, alias.name), alias)
            if first is not alias:
                report(alias.source.file, (alias.source.line, alias.source.col), "E502",
                       f"alias '{alias.name}' is already used in {alias.region} by "
                       f"{first.target} ({first.source}); an alias name points at one key "
                       "per region")
