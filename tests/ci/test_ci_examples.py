"""The CI examples in examples/ci/ work as written.

Every `kmsplan ...` command of their scripts is taken from the YAML, in order, and run as a real
subprocess (the installed `kmsplan` entry point) against a real store made for the test, with the
workflow's own variables: the pull request's plan must exit 2 (changes) and leave a signed plan
file, the merge's apply of that file 0, the nightly drift 0 after the apply and 2 once someone has
changed a key behind the stack's back. The non-kmsplan steps (checkout, comments, artifact
transfer) cannot run here; the test moves the plan file between two checkouts as the artifact
store would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
WORKFLOWS = {"github": EXAMPLES / "ci" / "github-actions.yml", "gitlab": EXAMPLES / "ci" / "gitlab-ci.yml"}
ACCOUNT = "111122223333"
PIPELINE = f"arn:aws:iam::{ACCOUNT}:role/kmsplan-pipeline"


def kmsplan_executable() -> str:
    """The console script pip installed next to this interpreter: what a pipeline calls."""
    found = shutil.which("kmsplan", path=str(Path(sys.executable).parent)) or shutil.which("kmsplan")
    assert found, "kmsplan is not installed next to the test interpreter (pip install -e .)"
    return found


# -- reading the workflows -------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One `kmsplan` command of a workflow, as written (variables not yet expanded)."""

    job: str
    argv: tuple[str, ...]
    variables: dict[str, str]

    @property
    def subcommand(self) -> str:
        return self.argv[1] if len(self.argv) > 1 else ""


# Tokens after which a word is a command name (the shell's "command position").
_COMMAND_START = {";", "&&", "||", "|", "&", "(", "!", "{", "$(", "then", "do", "else", "elif", "if", "while",
                  "until", "time", "exec"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*=")
_GITHUB_EXPRESSION = re.compile(r"\$\{\{\s*(?:env|vars)\.([A-Za-z_][A-Za-z_0-9]*)\s*\}\}")
_GITLAB_KEYWORDS = {"variables", "workflow", "stages", "default", "include", "image", "services", "cache",
                    "before_script", "after_script", "spec"}


def kmsplan_commands(script: str) -> list[list[str]]:
    """Every `kmsplan ...` command in a shell script, as argv lists, in order.

    Handles line continuations, comments, quoting, and commands that sit after `;`, `&&`, `||`,
    `if`, `!` or variable assignments; a command ends at the first operator or redirection."""
    text = _GITHUB_EXPRESSION.sub(r"${\1}", script.replace("\\\n", " "))
    commands = []
    for line in text.splitlines():
        if not re.search(r"(?<![\w/.-])kmsplan(?![\w/.-])", line):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        start = True
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if start and token == "kmsplan":
                argv = [token]
                index += 1
                while index < len(tokens) and not set(tokens[index]) <= set("();<>|&"):
                    argv.append(tokens[index])
                    index += 1
                if index < len(tokens) and tokens[index][0] in "<>" and argv[-1].isdigit():
                    argv.pop()  # `2>` is a redirection of stderr, not an argument
                commands.append(argv)
                start = False
                continue
            start = token in _COMMAND_START or set(token) <= set("();|&") or (start and bool(_ASSIGNMENT.match(token)))
            index += 1
    return commands


def _scalar(value: object) -> str:
    return str(value["value"]) if isinstance(value, dict) else str(value)


def _scripts(kind: str, doc: dict) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(job, script text, variables the job sees) in file order."""
    if kind == "github":
        top = {k: _scalar(v) for k, v in (doc.get("env") or {}).items()}
        for name, job in doc["jobs"].items():
            job_env = {**top, **{k: _scalar(v) for k, v in (job.get("env") or {}).items()}}
            for step in job.get("steps") or ():
                if "run" in step:
                    yield name, step["run"], {**job_env, **{k: _scalar(v) for k, v in (step.get("env") or {}).items()}}
        return
    top = {k: _scalar(v) for k, v in (doc.get("variables") or {}).items()}
    defaults = doc.get("default") or {}
    for name, job in doc.items():
        if name in _GITLAB_KEYWORDS or name.startswith(".") or not isinstance(job, dict) or "script" not in job:
            continue
        variables = {**top, **{k: _scalar(v) for k, v in (job.get("variables") or {}).items()}}
        for section in ("before_script", "script", "after_script"):
            entries = job.get(section, defaults.get(section, doc.get(section))) or []
            for entry in [entries] if isinstance(entries, str) else entries:
                yield name, str(entry), variables


def workflow_commands(kind: str) -> tuple[dict, list[Command]]:
    doc = yaml.safe_load(WORKFLOWS[kind].read_text(encoding="utf-8"))
    commands = [Command(job, tuple(argv), variables)
                for job, script, variables in _scripts(kind, doc) for argv in kmsplan_commands(script)]
    assert commands, f"no `kmsplan ...` command found in {WORKFLOWS[kind]}"
    return doc, commands


def expand(token: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"the workflow uses ${name}, which neither it nor the test defines"
        return values[name]

    return re.sub(r"\$(?:\{([A-Za-z_][A-Za-z_0-9]*)\}|([A-Za-z_][A-Za-z_0-9]*))", value, token)


# -- the test ----------------------------------------------------------------------------------------

def test_the_extractor_finds_commands_wherever_a_script_puts_them():
    script = """
      # kmsplan validate in a comment is not a command
      kmsplan validate "$STACK"
      code=0; kmsplan plan "$STACK" --out "$PLAN_FILE" \\
        --detailed-exitcode > plan.md || code=$?
      if ! kmsplan drift "$STACK" 2>/dev/null; then echo "kmsplan found drift"; fi
      NO_COLOR=1 kmsplan show 'a b.json' | tee out.txt
      gh run download "$run_id" --name kmsplan-plan
    """
    assert kmsplan_commands(script) == [
        ["kmsplan", "validate", "$STACK"],
        ["kmsplan", "plan", "$STACK", "--out", "$PLAN_FILE", "--detailed-exitcode"],
        ["kmsplan", "drift", "$STACK"],
        ["kmsplan", "show", "a b.json"],
    ]
    assert kmsplan_commands("echo no commands here") == []


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_the_pipeline_shape(kind):
    """Validate and plan on review, apply of the saved plan on merge, drift on a schedule; every
    command that reaches the store names the pipeline's principal."""
    doc, commands = workflow_commands(kind)
    order = [command.subcommand for command in commands]
    assert order.index("validate") < order.index("plan") < order.index("apply") < order.index("drift"), order
    plan = next(c for c in commands if c.subcommand == "plan")
    assert {"--out", "--detailed-exitcode", "--format", "markdown"} <= set(plan.argv)
    apply = next(c for c in commands if c.subcommand == "apply")
    assert "$PLAN_FILE" in apply.argv, "apply takes the saved plan, not the stack: the reviewed plan is applied"
    assert "--detailed-exitcode" in next(c for c in commands if c.subcommand == "drift").argv
    for command in commands:
        if command.subcommand != "validate":
            assert "--principal" in command.argv and "$PIPELINE_PRINCIPAL" in command.argv, command.argv
        assert "--store" not in command.argv, "the store comes from KMSPLAN_STORE, set once for the pipeline"
    for job in {c.job for c in commands}:
        assert "KMSPLAN_STORE" in commands[[c.job for c in commands].index(job)].variables, job
    if kind == "github":
        triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
        assert {"pull_request", "push", "schedule"} <= set(triggers)
    else:
        rules = json.dumps(doc["workflow"]["rules"])
        assert "merge_request_event" in rules and "schedule" in rules


def _principals_file(folder: Path) -> Path:
    """examples/principals.yaml plus the pipeline's own role, allowed kms:* by an identity policy."""
    data = yaml.safe_load((EXAMPLES / "principals.yaml").read_text(encoding="utf-8"))
    data["principals"].append({"arn": PIPELINE, "policies": [
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}]})
    path = folder / "principals.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


CHANGE_BY_HAND = """
import sys
from kmsplan.store import KeyStore
with KeyStore.open(sys.argv[1]) as store:
    kms = store.client("eu-west-1")
    key_id = kms.describe_key(KeyId="alias/payments-prod")["KeyMetadata"]["KeyId"]
    kms.update_key_description(KeyId=key_id, Description="changed by hand")
"""


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_the_pipeline_runs_as_written(kind, tmp_path):
    _, commands = workflow_commands(kind)
    exe = kmsplan_executable()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("KMSPLAN_")}

    def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *argv[1:]], cwd=cwd, env={**base_env, **env}, capture_output=True, text=True,
                              timeout=120, check=False)

    # The store the runner holds, with the identities the example stack names and the pipeline's.
    store = tmp_path / "store"
    setup_env = {"KMSPLAN_STORE": str(store)}
    init = run(["kmsplan", "store", "init", "--account", ACCOUNT, "--regions", "eu-west-1,eu-central-1"],
               tmp_path, setup_env)
    assert init.returncode == 0, init.stderr
    registered = run(["kmsplan", "store", "principals", "apply", str(_principals_file(tmp_path))], tmp_path, setup_env)
    assert registered.returncode == 0, registered.stderr

    # Two checkouts of the same commit: the pull request's and the one the merge runs in.
    stack_path = commands[0].variables["STACK"]
    checkouts = {"review": tmp_path / "pr-checkout", "merge": tmp_path / "main-checkout"}
    for checkout in checkouts.values():
        shutil.copytree(EXAMPLES / "stacks" / "payments", checkout / stack_path)

    def variables(command: Command) -> dict[str, str]:
        return {**command.variables, "KMSPLAN_STORE": str(store), "PIPELINE_PRINCIPAL": PIPELINE}

    plan_jobs = {c.job for c in commands if c.subcommand in ("validate", "plan")}
    expected = {"validate": 0, "plan": 2, "apply": 0, "audit": 0, "drift": 0}
    outputs: dict[str, str] = {}
    carried = False
    for command in commands:
        values = variables(command)
        argv = [expand(token, values) for token in command.argv]
        in_review = command.job in plan_jobs
        if not in_review and not carried:
            # the artifact: the plan file, downloaded into the merge's checkout
            plan_file = values["PLAN_FILE"]
            shutil.copy(checkouts["review"] / plan_file, checkouts["merge"] / plan_file)
            carried = True
        result = run(argv, checkouts["review" if in_review else "merge"], values)
        assert "Traceback" not in result.stderr
        assert result.returncode == expected[command.subcommand], (argv, result.returncode, result.stderr)
        outputs[command.subcommand] = result.stdout

    assert "7 to add" in outputs["plan"], "the Markdown comment carries the plan"
    assert outputs["drift"].strip(), "the drift report is written for the job summary"
    # the merge job's evidence: what the pipeline's principal did, and nobody else's calls
    records = [json.loads(line) for line in outputs["audit"].splitlines()]
    assert records and {r["userIdentity"]["arn"] for r in records} == {PIPELINE}
    assert sum(r["eventName"] == "CreateKey" and "errorCode" not in r for r in records) >= 2

    # Someone changes a key by hand; the nightly job must now fail.
    changed = subprocess.run([sys.executable, "-c", CHANGE_BY_HAND, str(store)], capture_output=True, text=True,
                             env=base_env, timeout=120, check=False)
    assert changed.returncode == 0, changed.stderr
    for command in commands:
        if command.subcommand == "drift":
            values = variables(command)
            result = run([expand(token, values) for token in command.argv], checkouts["merge"], values)
            assert result.returncode == 2, (result.returncode, result.stderr)
            assert "changed by hand" in result.stdout
