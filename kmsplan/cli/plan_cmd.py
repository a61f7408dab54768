"""`kmsplan plan | apply | drift | import | show | force-unlock`: the reconciler's commands.

Exit codes (Terraform's): 0 success or nothing to do; 2 changes (`plan --detailed-exitcode`) or
drift (`drift`, always); 1 any error, guard errors and usage errors included.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kmsplan.cli.store_cmd import STORE_OPTION
from kmsplan.cli.target import AWS_OPTIONS, ENDPOINT_OPTION
from kmsplan.cli.target import open_backend as _backend
from kmsplan.errors import KmsplanError
from kmsplan.plan import (
    ApplyFailed, Flags, LocalBackend, apply_plan, drift, force_unlock, import_key, load_valid_stack, plan_stack,
    read_plan_file,
)
from kmsplan.plan import render
from kmsplan.plan.model import Plan
from kmsplan.stack import Stack

PRINCIPAL_OPTION = click.option(
    "--principal", default=None, envvar="KMSPLAN_PRINCIPAL",
    help="IAM ARN every store call is made as (default: the store's administrator; env KMSPLAN_PRINCIPAL).")
FORMAT_OPTION = click.option("--format", "output", type=click.Choice(["text", "json", "markdown"]), default="text",
                             show_default=True, help="text for people, json for tools, markdown for PR comments.")


def _guard_options(command):
    command = click.option("--recent-use-days", type=click.IntRange(0, 3650), default=30, show_default=True,
                           help="A key used for cryptography within this many days counts as in use.")(command)
    command = click.option("--allow-delete-recently-used", is_flag=True,
                           help="Allow deleting keys the audit log shows in use (still listed as warnings).")(command)
    command = click.option("--allow-delete", "allow_delete", multiple=True, metavar="ADDRESS",
                           help="Allow this key or replica to be scheduled for deletion (repeatable).")(command)
    return command


def _flags(allow_delete: tuple[str, ...], allow_delete_recently_used: bool, recent_use_days: int) -> Flags:
    return Flags(tuple(sorted(set(allow_delete))), allow_delete_recently_used, recent_use_days)


def use_color(ctx: click.Context) -> bool:
    """Colour only for a person: stdout a terminal, no --no-color (ctx.color False), no NO_COLOR."""
    return ctx.color is not False and sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _render(plan: Plan, output: str, color: bool) -> str:
    if output == "json":
        return render.render_json(plan)
    if output == "markdown":
        return render.render_markdown(plan)
    return render.render_text(plan, color=color)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@STORE_OPTION
@ENDPOINT_OPTION
@AWS_OPTIONS
@PRINCIPAL_OPTION
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the signed plan here, for `kmsplan apply PLAN`.")
@FORMAT_OPTION
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes (0: none, 1: error).")
@_guard_options
@click.pass_context
def plan(ctx: click.Context, paths: tuple[str, ...], store_dir: Path | None, principal: str | None,
         out: Path | None, output: str, detailed_exitcode: bool, allow_delete: tuple[str, ...],
         allow_delete_recently_used: bool, recent_use_days: int) -> None:
    """Show what applying the stack in PATHS would change in the live store. Reads only."""
    stack = load_valid_stack(paths)
    with _backend(store_dir, principal, stack.region, _regions(stack)) as backend:
        made = plan_stack(stack, backend, _flags(allow_delete, allow_delete_recently_used, recent_use_days),
                          sign=out is not None)
    click.echo(_render(made, output, use_color(ctx)), nl=False)
    if made.has_errors:
        raise KmsplanError("the plan has guard errors; nothing can be applied" +
                           (" and no plan file was written" if out else ""),
                           hint="each error above says what to do")
    if out is not None:
        out.write_text(render.render_json(made), encoding="utf-8")
        click.echo(f"Saved the signed plan to {out}. Apply it with: kmsplan apply {out}", err=True)
    ctx.exit(2 if detailed_exitcode and made.effective else 0)


def _regions(stack: Stack | None) -> tuple[str, ...]:
    """The stack's regions, its home region first (for --aws: plan signing and the lock live there)."""
    if stack is None:
        return ()
    others = {key.region for key in stack.keys} | {r.region for key in stack.keys for r in key.replicas}
    return (stack.region, *sorted(others - {stack.region}))


def _plan_region(made: Plan | None) -> str | None:
    return next((change.region for change in made.changes), None) if made else None


def _is_plan_file(paths: tuple[str, ...]) -> bool:
    if len(paths) != 1 or not Path(paths[0]).is_file():
        return False
    with open(paths[0], "rb") as handle:
        return handle.read(64).lstrip().startswith(b"{")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@STORE_OPTION
@ENDPOINT_OPTION
@AWS_OPTIONS
@PRINCIPAL_OPTION
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed when not on a terminal).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_guard_options
@click.pass_context
def apply(ctx: click.Context, paths: tuple[str, ...], store_dir: Path | None, principal: str | None,
          auto_approve: bool, output: str, allow_delete: tuple[str, ...], allow_delete_recently_used: bool,
          recent_use_days: int) -> None:
    """Apply a saved plan (PLAN), or plan the stack in PATHS and apply it after confirmation."""
    saved = _is_plan_file(paths)
    made = read_plan_file(paths[0]) if saved else None
    stack = None if saved else load_valid_stack(paths)
    if made is not None and ctx.meta.get("kmsplan.aws"):  # AWS: the home region holds the signing key
        stack = load_valid_stack(sorted(made.stack_files))
    with _backend(store_dir, principal, stack.region if stack else _plan_region(made), _regions(stack)) as backend:
        if made is not None:
            if principal is None and isinstance(backend, LocalBackend):  # remote: the credential decides
                backend.principal = made.principal
        else:
            made = plan_stack(stack, backend, _flags(allow_delete, allow_delete_recently_used, recent_use_days))
            if output == "text":
                click.echo(_render(made, "text", use_color(ctx)), nl=False)
            if made.has_errors:
                raise KmsplanError("the plan has guard errors; nothing was applied", hint="each error above says what to do")
        if not made.effective:
            _report_results(ctx, output, [], "No changes to apply.")
            return
        if not saved and not auto_approve:
            if not sys.stdin.isatty():
                raise KmsplanError("apply needs confirmation and this is not a terminal",
                                   hint="pass --auto-approve, or apply a reviewed plan file")
            if click.prompt("Apply these changes? Only 'yes' is accepted", default="", show_default=False) != "yes":
                raise KmsplanError("apply cancelled; nothing was changed")
        progress = (lambda line: click.echo(line, err=True)) if output == "text" else (lambda line: None)
        try:
            results, notice = apply_plan(made, backend, saved=saved, progress=progress)
        except ApplyFailed as failure:
            if output == "json":
                click.echo(render.render_results_json(failure.results, ok=False), nl=False)
            else:
                click.echo(render.render_results_text(failure.results), nl=False)
            raise
    if notice:
        click.echo(f"Note: {notice}", err=True)
    counts = made.summary()
    _report_results(ctx, output, results, f"Apply complete: {counts['add']} added, {counts['change']} changed, "
                                          f"{counts['delete']} deleted.")


def _report_results(ctx: click.Context, output: str, results: list, line: str) -> None:
    if output == "json":
        click.echo(render.render_results_json(results, ok=True), nl=False)
    else:
        click.secho(line, fg="green", color=use_color(ctx))


@click.command("drift")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@STORE_OPTION
@ENDPOINT_OPTION
@AWS_OPTIONS
@PRINCIPAL_OPTION
@FORMAT_OPTION
@click.option("--detailed-exitcode", is_flag=True, help="Accepted for symmetry with plan: drift always exits 2 on drift.")
@click.pass_context
def drift_cmd(ctx: click.Context, paths: tuple[str, ...], store_dir: Path | None, principal: str | None,
              output: str, detailed_exitcode: bool) -> None:
    """Report every difference between the live store and the stack in PATHS; exit 2 when anything drifted."""
    stack = load_valid_stack(paths)
    with _backend(store_dir, principal, stack.region, _regions(stack)) as backend:
        items = drift(stack, backend)
    if output == "json":
        click.echo(render.render_drift_json(items, stack.name), nl=False)
    elif output == "markdown":
        click.echo(render.render_drift_markdown(items, stack.name), nl=False)
    else:
        click.echo(render.render_drift_text(items, color=use_color(ctx)), nl=False)
    ctx.exit(2 if items else 0)


@click.command("import")
@click.argument("path", type=click.Path())
@click.argument("address")
@click.argument("key")
@STORE_OPTION
@ENDPOINT_OPTION
@AWS_OPTIONS
@PRINCIPAL_OPTION
def import_cmd(path: str, address: str, key: str, store_dir: Path | None, principal: str | None) -> None:
    """Adopt the existing KEY (id, ARN or alias) as ADDRESS of the stack in PATH."""
    stack = load_valid_stack([path])
    with _backend(store_dir, principal, stack.region, _regions(stack)) as backend:
        click.echo(import_key(stack, backend, address, key))


@click.command()
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@FORMAT_OPTION
@click.pass_context
def show(ctx: click.Context, plan_file: str, output: str) -> None:
    """Render a saved plan (it is not verified here; apply verifies it)."""
    click.echo(_render(read_plan_file(plan_file), output, use_color(ctx)), nl=False)


@click.command("force-unlock")
@click.argument("stack")
@STORE_OPTION
@ENDPOINT_OPTION
@PRINCIPAL_OPTION
def force_unlock_cmd(stack: str, store_dir: Path | None, principal: str | None) -> None:
    """Release STACK's apply lock left by an apply that died. Make sure it is dead first."""
    with _backend(store_dir, principal) as backend:
        holder = force_unlock(backend, stack)
    if holder:
        click.echo(f"Released the lock of stack {stack} held by {holder.get('principal')} since {holder.get('since')}.")
    else:
        click.echo(f"Stack {stack} was not locked.")


COMMANDS = (plan, apply, drift_cmd, import_cmd, show, force_unlock_cmd)
