"""docs/cli-reference.md is generated from the click commands and must match them."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from kmsplan.cli import cli
from kmsplan.cli.reference import REGENERATE, render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli-reference.md"


def _commands(command: click.Command, ctx: click.Context):
    yield ctx.command_path
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx))


def test_cli_reference_is_current() -> None:
    expected = render()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/cli-reference.md (committed)", "docs/cli-reference.md (from the commands)", n=1))[:40])
        raise AssertionError(
            f"docs/cli-reference.md is stale. Regenerate it from the repository root with:\n\n"
            f"    .venv/bin/{REGENERATE}\n\nFirst differences:\n{diff}")


def test_every_command_has_a_section() -> None:
    page = render()
    for path in _commands(cli, click.Context(cli, info_name="kmsplan")):
        assert f"\n## {path}\n" in page, f"no section for `{path}` in the generated reference"


def test_rendering_is_deterministic(monkeypatch) -> None:
    first = render()
    monkeypatch.setenv("COLUMNS", "37")
    monkeypatch.setenv("KMSPLAN_STORE", "/elsewhere")
    monkeypatch.setenv("NO_COLOR", "1")
    assert render() == first
