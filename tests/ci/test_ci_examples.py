"""The CI examples in examples/ci/ work as written.

Every `kmsplan ...` command of their scripts is taken from the YAML, in order, and run as a real
subprocess (the installed `kmsplan` entry point) the way a hosted runner runs it: against a real
`kmsplan serve` (over TLS) on a real store made for the test, with only the environment the
workflow itself gives each step — its variables, and the secrets it maps to AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, resolved from repository/CI variables and secrets the test fills with
access keys made by `kmsplan store credentials create` for the principals docs/pipelines.md
registers. The pull request's plan must exit 2 (changes) and leave a signed plan file, the
merge's apply of that file 0, the audit evidence 0, the nightly drift 0 after the apply and 2
once someone has changed a key through boto3 against the server. The same commands run once
more as on a self-hosted runner on the store's host (KMSPLAN_STORE, no keys). The non-kmsplan
steps (checkout, comments, artifact transfer) cannot run here; the test moves the plan file
between two checkouts as the artifact store would.
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

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
from server_helpers import (  # noqa: E402  (tests/server's helpers)
    AccessKey, create_access_key, self_signed, start_server,
)

EXAMPLES = REPO / "examples"
PIPELINES_DOC = REPO / "docs" / "pipelines.md"
WORKFLOWS = {"github": EXAMPLES / "ci" / "github-actions.yml", "gitlab": EXAMPLES / "ci" / "gitlab-ci.yml"}
ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
PIPELINE = f"arn:aws:iam::{ACCOUNT}:role/kmsplan-pipeline"   # plans and applies
DRIFT = f"arn:aws:iam::{ACCOUNT}:role/kmsplan-drift"         # the nightly drift check: reads only
STORE_COMMANDS = {"plan", "apply", "drift", "audit"}
PRINCIPAL_OF = {"plan": "$PIPELINE_PRINCIPAL", "apply": "$PIPELINE_PRINCIPAL", "audit": "$PIPELINE_PRINCIPAL",
                "drift": "$DRIFT_PRINCIPAL"}

# What a project sets in its settings, by the names the workflows and docs/pipelines.md use; the
# access keys are filled in per test. GitHub: repository variables, and secrets (the pipeline's
# in the `kmsplan` environment). GitLab: CI/CD variables (AWS_CA_BUNDLE is a File variable).
GITHUB_SECRETS = {"KMSPLAN_ACCESS_KEY_ID": (PIPELINE, "id"), "KMSPLAN_SECRET_ACCESS_KEY": (PIPELINE, "secret"),
                  "KMSPLAN_DRIFT_ACCESS_KEY_ID": (DRIFT, "id"), "KMSPLAN_DRIFT_SECRET_ACCESS_KEY": (DRIFT, "secret")}
GITLAB_KEY_VARIABLES = {"KMSPLAN_PIPELINE_ACCESS_KEY_ID": (PIPELINE, "id"),
                        "KMSPLAN_PIPELINE_SECRET_ACCESS_KEY": (PIPELINE, "secret"),
                        "KMSPLAN_DRIFT_ACCESS_KEY_ID": (DRIFT, "id"),
                        "KMSPLAN_DRIFT_SECRET_ACCESS_KEY": (DRIFT, "secret")}


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
    """(job, script text, variables the job sees, as written) in file order."""
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
    for name, job in gitlab_jobs(doc).items():
        variables = {**top, **{k: _scalar(v) for k, v in (job.get("variables") or {}).items()}}
        for section in ("before_script", "script", "after_script"):
            entries = job.get(section, defaults.get(section, doc.get(section))) or []
            for entry in [entries] if isinstance(entries, str) else entries:
                yield name, str(entry), variables


def gitlab_jobs(doc: dict) -> dict[str, dict]:
    return {name: job for name, job in doc.items()
            if name not in _GITLAB_KEYWORDS and not name.startswith(".") and isinstance(job, dict) and "script" in job}


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


# -- what the platform puts in a step's environment ---------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """A project's settings: variables and secrets (GitHub), or CI/CD variables (GitLab)."""

    variables: dict[str, str]
    secrets: dict[str, str]


_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _github_value(expression: str, settings: Settings) -> str:
    """A `${{ ... }}` of the forms the workflow's env uses: vars.X, secrets.X, 'literal', joined by ||."""
    for operand in (part.strip() for part in expression.split("||")):
        if operand.startswith("vars."):
            value = settings.variables.get(operand[5:], "")      # an unset variable is empty
        elif operand.startswith("secrets."):
            name = operand[8:]
            assert name in settings.secrets, f"the workflow uses secrets.{name}, which docs/pipelines.md does not name"
            value = settings.secrets[name]
        elif operand.startswith("'") and operand.endswith("'"):
            value = operand[1:-1]
        else:
            raise AssertionError(f"the test cannot evaluate ${{{{ {operand} }}}} in an env value")
        if value:
            return value
    return ""


def step_environment(kind: str, variables: dict[str, str], settings: Settings) -> dict[str, str]:
    """The variables a step's process gets, as the platform resolves them."""
    if kind == "github":
        return {name: _EXPRESSION.sub(lambda m: _github_value(m.group(1), settings), value)
                for name, value in variables.items()}
    # GitLab: project CI/CD variables take precedence over the file's; `$NAME` in a value is expanded.
    merged = {**variables, **settings.variables}
    return {name: expand(value, merged) for name, value in merged.items()}


def github_ca_steps(doc: dict, job: str) -> list[dict]:
    """The steps of a job that write AWS_CA_BUNDLE for the later ones (from KMSPLAN_CA_PEM)."""
    return [step for step in doc["jobs"][job].get("steps") or ()
            if "run" in step and "AWS_CA_BUNDLE=" in step["run"] and "GITHUB_ENV" in step["run"]]


# -- the store, its server and the principals ------------------------------------------------------------

def documented_principals() -> list[dict]:
    """The principals file of docs/pipelines.md ("Principals and keys")."""
    blocks = re.findall(r"```yaml\n(.*?)```", PIPELINES_DOC.read_text(encoding="utf-8"), re.S)
    found = [yaml.safe_load(block) for block in blocks if "principals:" in block and "kmsplan-pipeline" in block]
    assert len(found) == 1, "docs/pipelines.md shows the pipeline's principals file once"
    return found[0]["principals"]


def project_settings(kind: str, endpoint: str, keys: dict[str, AccessKey], ca: Path) -> Settings:
    def key_part(principal: str, part: str) -> str:
        return keys[principal].access_key_id if part == "id" else keys[principal].secret

    if kind == "github":
        return Settings({"KMSPLAN_ENDPOINT": endpoint, "KMSPLAN_CA_PEM": ca.read_text()},
                        {name: key_part(*which) for name, which in GITHUB_SECRETS.items()})
    return Settings({"KMSPLAN_ENDPOINT": endpoint, "AWS_CA_BUNDLE": str(ca),
                     **{name: key_part(*which) for name, which in GITLAB_KEY_VARIABLES.items()}}, {})


def runner_base_env() -> dict[str, str]:
    """A hosted runner: no kmsplan or AWS settings, no AWS config files, no instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMSPLAN_", "AWS_"))}
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


# -- the tests -------------------------------------------------------------------------------------------

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
def test_the_pipeline_shape(kind, tmp_path):
    """Validate and plan on review, apply of the saved plan on merge, drift on a schedule, all on
    hosted runners reaching the served store at KMSPLAN_ENDPOINT: validate gets no key, plan,
    apply and audit get the pipeline's key (one principal plans and applies), drift the read-only
    key, and each store command names the principal of the key its step gets."""
    doc, commands = workflow_commands(kind)
    order = [command.subcommand for command in commands]
    assert order.index("validate") < order.index("plan") < order.index("apply") < order.index("drift"), order
    plan = next(c for c in commands if c.subcommand == "plan")
    assert {"--out", "--detailed-exitcode", "--format", "markdown"} <= set(plan.argv)
    apply = next(c for c in commands if c.subcommand == "apply")
    assert "$PLAN_FILE" in apply.argv, "apply takes the saved plan, not the stack: the reviewed plan is applied"
    assert "--detailed-exitcode" in next(c for c in commands if c.subcommand == "drift").argv

    endpoint = "https://kms.internal.example:8443"
    keys = {p: AccessKey(f"AKIA{name}KEYEXAMPLE00"[:20], f"{name}-secret", p)
            for p, name in ((PIPELINE, "PIPE"), (DRIFT, "DRFT"))}
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
    settings = project_settings(kind, endpoint, keys, ca)
    for command in commands:
        assert "--store" not in command.argv and "--endpoint" not in command.argv, \
            "the store is KMSPLAN_ENDPOINT, set once for the pipeline"
        assert "KMSPLAN_STORE" not in command.variables, "a hosted runner holds no store (self-hosted: a comment)"
        env = step_environment(kind, command.variables, settings)
        assert env.get("KMSPLAN_ENDPOINT") == endpoint, (command.job, "KMSPLAN_ENDPOINT is the project's setting")
        assert env.get("AWS_REGION"), command.job
        if command.subcommand not in STORE_COMMANDS:
            assert not env.get("AWS_ACCESS_KEY_ID") and not env.get("AWS_SECRET_ACCESS_KEY"), \
                f"{command.subcommand} needs no store and gets no key"
            continue
        variable = PRINCIPAL_OF[command.subcommand]
        at = command.argv.index("--principal")
        assert command.argv[at + 1] == variable, command.argv
        principal = expand(variable, env)
        assert principal in (PIPELINE, DRIFT), f"the default {variable} is not an ARN docs/pipelines.md registers"
        assert (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) == \
            (keys[principal].access_key_id, keys[principal].secret), (command.job, command.subcommand, principal)
    drift = next(c for c in commands if c.subcommand == "drift")
    assert expand(PRINCIPAL_OF["drift"], step_environment(kind, drift.variables, settings)) == DRIFT, \
        "drift runs on the read-only key"

    text = WORKFLOWS[kind].read_text(encoding="utf-8")
    documented = PIPELINES_DOC.read_text(encoding="utf-8")
    store_jobs = {c.job for c in commands if c.subcommand in STORE_COMMANDS}
    if kind == "github":
        triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
        assert {"pull_request_target", "push", "schedule"} <= set(triggers)
        assert "pull_request" not in triggers, "a pull request's own workflow must never get the pipeline's key"
        assert triggers["pull_request_target"]["branches"] == ["main"], "only pull requests into main are planned"
        for name in set(re.findall(r"\b(?:vars|secrets)\.([A-Z_]+)", text)):
            assert name in documented, f"{name} is not described in docs/pipelines.md"
        for name, job in doc["jobs"].items():
            assert job["runs-on"] == "ubuntu-latest", name
            steps = job.get("steps") or []
            uses_pipeline_key = any("secrets.KMSPLAN_ACCESS_KEY_ID" in json.dumps(step.get("env") or {})
                                    for step in steps)
            if uses_pipeline_key:
                environment = job.get("environment")
                assert (environment.get("name") if isinstance(environment, dict) else environment) == "kmsplan", name
            if name in store_jobs:
                first_store_step = next(i for i, step in enumerate(steps)
                                        if any(argv[1:2] and argv[1] in STORE_COMMANDS
                                               for argv in kmsplan_commands(step.get("run", ""))))
                assert any(step in github_ca_steps(doc, name) for step in steps[:first_store_step]), \
                    f"{name}: AWS_CA_BUNDLE is set up before the first store command"
        plan_job = doc["jobs"][plan.job]
        assert "head.repo.full_name == github.repository" in plan_job["if"], "forks get no plan (and no key)"
        [checkout] = [s for s in plan_job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")]
        assert "refs/pull/" in checkout["with"]["ref"] and checkout["with"]["ref"].endswith("/merge")
        assert checkout["with"]["persist-credentials"] is False
    else:
        rules = json.dumps(doc["workflow"]["rules"])
        assert "merge_request_event" in rules and "schedule" in rules
        assert str((doc.get("default") or {}).get("image", "")).startswith("python:"), "a python image, any runner"
        for name, job in gitlab_jobs(doc).items():
            assert "tags" not in job and "tags" not in (doc.get("default") or {}), f"{name}: no self-hosted runner tag"
        for name in [*GITLAB_KEY_VARIABLES, "KMSPLAN_ENDPOINT", "AWS_CA_BUNDLE", "KMSPLAN_GITLAB_TOKEN"]:
            assert name in text and name in documented, name


def _principals_file(folder: Path) -> Path:
    """examples/principals.yaml (the roles the example stack names) plus the pipeline's principals
    exactly as docs/pipelines.md registers them."""
    data = yaml.safe_load((EXAMPLES / "principals.yaml").read_text(encoding="utf-8"))
    pipeline = documented_principals()
    assert {p["arn"] for p in pipeline} == {PIPELINE, DRIFT}
    data["principals"].extend(pipeline)
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


@pytest.mark.parametrize("mode", ["hosted", "self-hosted"])
@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_the_pipeline_runs_as_written(kind, mode, tmp_path, request):
    doc, commands = workflow_commands(kind)
    exe = kmsplan_executable()
    base_env = runner_base_env()

    def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        result = subprocess.run([exe, *argv[1:]], cwd=cwd, env={**base_env, **env}, capture_output=True, text=True,
                                timeout=120, check=False)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    # The store on its host, with the identities the example stack names and the pipeline's two.
    store = tmp_path / "store"
    host_env = {"KMSPLAN_STORE": str(store)}
    init = run(["kmsplan", "store", "init", "--account", ACCOUNT, "--regions", "eu-west-1,eu-central-1"],
               tmp_path, host_env)
    assert init.returncode == 0, init.stderr
    registered = run(["kmsplan", "store", "principals", "apply", str(_principals_file(tmp_path))], tmp_path, host_env)
    assert registered.returncode == 0, registered.stderr

    # Served over TLS with a certificate the runners trust through the workflow's CA setting, and
    # an access key for each principal the pipeline names, as its settings hold them.
    cert, cert_key = self_signed(tmp_path)
    server = None
    if mode == "hosted":
        keys = {principal: create_access_key(store, principal) for principal in (PIPELINE, DRIFT, ROOT)}
        server = start_server(store, tmp_path / "serve.log", "--tls-cert", str(cert), "--tls-key", str(cert_key))
        request.addfinalizer(server.stop)
    else:  # the self-hosted variant drops the keys: these are never sent anywhere
        keys = {principal: AccessKey("AKIAUNUSEDUNUSEDUNUS", "unused", principal) for principal in (PIPELINE, DRIFT)}
    settings = project_settings(kind, server.url if server else "https://unused.invalid", keys, cert)

    # Two checkouts of the same commit: the pull request's and the one the merge runs in.
    stack_path = commands[0].variables["STACK"]
    checkouts = {"review": tmp_path / "pr-checkout", "merge": tmp_path / "main-checkout"}
    for checkout in checkouts.values():
        shutil.copytree(EXAMPLES / "stacks" / "payments", checkout / stack_path)

    written_by_steps: dict[str, dict[str, str]] = {}   # per job: what its steps wrote to $GITHUB_ENV

    def prepare(job: str) -> dict[str, str]:
        """GitHub: run the job's CA step (a real bash run of the step's script) once."""
        if kind != "github" or mode != "hosted":
            return {}
        if job not in written_by_steps:
            written_by_steps[job] = {}
            top, job_doc = doc.get("env") or {}, doc["jobs"][job]
            for step in github_ca_steps(doc, job):
                assert "vars.KMSPLAN_CA_PEM" in step.get("if", ""), "the CA step runs only when KMSPLAN_CA_PEM is set"
                step_env = step_environment(kind, {**top, **(job_doc.get("env") or {}), **(step.get("env") or {})},
                                            settings)
                github_env = tmp_path / f"github-env-{job}"
                github_env.write_text("")
                runner_temp = tmp_path / f"runner-temp-{job}"
                runner_temp.mkdir()
                done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], env={
                    **base_env, **step_env, "RUNNER_TEMP": str(runner_temp), "GITHUB_ENV": str(github_env)},
                    capture_output=True, text=True, timeout=60, check=False)
                assert done.returncode == 0, done.stderr
                written_by_steps[job].update(line.split("=", 1) for line in github_env.read_text().splitlines())
        return written_by_steps[job]

    def environment(command: Command) -> dict[str, str]:
        env = {**step_environment(kind, command.variables, settings), **prepare(command.job)}
        if mode == "self-hosted":
            # the documented variant: KMSPLAN_STORE instead of the endpoint, no keys, no CA
            for name in ("KMSPLAN_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE"):
                env.pop(name, None)
            env["KMSPLAN_STORE"] = str(store)
        return env

    drift_env = environment(next(c for c in commands if c.subcommand == "drift"))
    plan_jobs = {c.job for c in commands if c.subcommand in ("validate", "plan")}
    expected = {"validate": 0, "plan": 2, "apply": 0, "audit": 0, "drift": 0}
    outputs: dict[str, str] = {}
    carried = False
    for command in commands:
        env = environment(command)
        argv = [expand(token, env) for token in command.argv]
        in_review = command.job in plan_jobs
        if not in_review and not carried:
            # the artifact: the plan file, downloaded into the merge's checkout
            plan_file = env["PLAN_FILE"]
            shutil.copy(checkouts["review"] / plan_file, checkouts["merge"] / plan_file)
            carried = True
            if mode == "hosted":
                # Why the pull request is planned with the pipeline's key, not a read-only one:
                # the read-only principal's plan fails the lockout guard, and the reviewed plan
                # applies only as the principal that made it.
                read_only_plan = run(["kmsplan", "plan", stack_path], checkouts["review"], drift_env)
                assert read_only_plan.returncode == 1 and "G301" in read_only_plan.stdout, read_only_plan.stdout
                other_apply = run(["kmsplan", "apply", plan_file], checkouts["merge"], drift_env)
                assert other_apply.returncode == 1 and "the plan was made as" in other_apply.stderr, other_apply.stderr
        result = run(argv, checkouts["review" if in_review else "merge"], env)
        assert result.returncode == expected[command.subcommand], (argv, result.returncode, result.stderr)
        outputs[command.subcommand] = result.stdout

    assert "7 to add" in outputs["plan"], "the Markdown comment carries the plan"
    assert outputs["drift"].strip(), "the drift report is written for the job summary"
    # the merge job's evidence: what the pipeline's principal did, and nobody else's calls
    records = [json.loads(line) for line in outputs["audit"].splitlines()]
    assert records and {r["userIdentity"]["arn"] for r in records} == {PIPELINE}
    assert sum(r["eventName"] == "CreateKey" and "errorCode" not in r for r in records) >= 2

    # Someone changes a key by hand; the nightly job must now fail.
    if server is not None:
        def kms(principal: str):
            return boto3.client("kms", endpoint_url=server.url, region_name="eu-west-1", verify=str(cert),
                                aws_access_key_id=keys[principal].access_key_id,
                                aws_secret_access_key=keys[principal].secret,
                                config=Config(retries={"max_attempts": 1}))

        key_id = kms(ROOT).describe_key(KeyId="alias/payments-prod")["KeyMetadata"]["KeyId"]
        with pytest.raises(ClientError, match="AccessDenied"):
            kms(DRIFT).update_key_description(KeyId=key_id, Description="the drift key only reads")
        kms(ROOT).update_key_description(KeyId=key_id, Description="changed by hand")
    else:
        changed = subprocess.run([sys.executable, "-c", CHANGE_BY_HAND, str(store)], capture_output=True, text=True,
                                 env=base_env, timeout=120, check=False)
        assert changed.returncode == 0, changed.stderr
    for command in commands:
        if command.subcommand == "drift":
            env = environment(command)
            result = run([expand(token, env) for token in command.argv], checkouts["merge"], env)
            assert result.returncode == 2, (result.returncode, result.stderr)
            assert "changed by hand" in result.stdout
    if server is not None:
        # every store call of the pipeline came over the network, signed with the keys its settings hold
        callers = {(r.get("principal"), r.get("accessKeyId")) for r in server.log_records() if r.get("operation")}
        assert {(PIPELINE, keys[PIPELINE].access_key_id), (DRIFT, keys[DRIFT].access_key_id)} <= callers, callers
        assert server.stop() == 0, server.log.read_text()[-2000:]
