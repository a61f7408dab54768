"""How fast `kmsplan validate` is on big stacks, next to the floor: PyYAML's C loader alone.

Generates stacks of 1,000 and 10,000 keys (each key with an inline key policy, two grants, an
alias and a multi-Region replica with its own alias), 500 keys per file, into a temporary folder,
then times, best of --repeat runs each:

* floor:    yaml.load(..., Loader=yaml.CSafeLoader) over the same files (parse only, no checks)
* floor-nogc: the same with Python's cyclic GC off, as load_stack runs (a stricter floor)
* validate: kmsplan.stack.load_stack(folder) - loading with positions, schema, rules,
            interpolation, policy parsing, and the typed model

and prints them, the ratio to each floor (goal: <= 3x the floor) and the per-key cost (linear in
keys: the per-key cost should not grow from 1,000 to 10,000 keys).

    python benchmarks/validate_scale.py [--sizes 1000 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmsplan.stack import load_stack

HEADER = """\
version: 1
stack: scale-test
account: "111122223333"
region: eu-west-1
vars: {team: platform}
defaults:
  deletion_window_days: 30
  tags: {env: prod, team: "${var.team}"}
"""

KEY = """\
  app-{i}:
    description: data-at-rest for app {i}
    multi_region: true
    rotation: {{enabled: true, period_days: 180}}
    aliases: [alias/app-{i}]
    tags: {{app: app-{i}, cost-center: "cc-{cc}"}}
    policy:
      Version: "2012-10-17"
      Statement:
        - Sid: EnableRootAccount
          Effect: Allow
          Principal: {{AWS: "arn:aws:iam::${{account}}:root"}}
          Action: "kms:*"
          Resource: "*"
        - Sid: AppUse
          Effect: Allow
          Principal: {{AWS: "arn:aws:iam::${{account}}:role/app-{i}"}}
          Action: [kms:Encrypt, kms:Decrypt, kms:GenerateDataKey]
          Resource: "*"
          Condition:
            StringEquals: {{"kms:ViaService": "s3.${{region}}.amazonaws.com"}}
    grants:
      reader:
        grantee: arn:aws:iam::${{account}}:role/reader-{i}
        operations: [Decrypt, DescribeKey]
        constraints: {{encryption_context_subset: {{app: app-{i}}}}}
      writer:
        grantee: arn:aws:iam::${{account}}:role/writer-{i}
        operations: [Encrypt, GenerateDataKey]
        retiring_principal: arn:aws:iam::${{account}}:role/grant-manager
    replicas:
      eu-central-1:
        aliases: [alias/app-{i}]
"""


def generate(folder: Path, keys: int, per_file: int) -> list[Path]:
    files = []
    for start in range(0, keys, per_file):
        path = folder / f"keys-{start // per_file:04d}.yaml"
        end = min(keys, start + per_file)
        body = "".join(KEY.format(i=i, cc=i % 97) for i in range(start, end))
        path.write_text(HEADER + "keys:\n" + body, encoding="utf-8")
        files.append(path)
    return files


def best_of(repeat: int, run: Callable[[], None], *, no_gc: bool = False) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        if no_gc:
            gc.disable()
        start = time.perf_counter()
        try:
            run()
        finally:
            gc.enable()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-file", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, PyYAML {yaml.__version__} "
          f"(libyaml {'yes' if yaml.__with_libyaml__ else 'NO'}), best of {args.repeat} runs")
    print(f"{'keys':>7} {'files':>5} {'MiB':>6} {'floor s':>8} {'nogc s':>8} "
          f"{'validate s':>10} {'ratio':>6} {'nogc ratio':>10} {'us/key':>7}")
    per_key: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="kmsplan-scale-") as tmp:
        for keys in args.sizes:
            folder = Path(tmp) / f"stack-{keys}"
            folder.mkdir()
            files = generate(folder, keys, args.per_file)
            size = sum(f.stat().st_size for f in files) / (1024 * 1024)

            def floor(files: list[Path] = files) -> None:
                for file in files:
                    with open(file, "rb") as handle:
                        yaml.load(handle, Loader=yaml.CSafeLoader)

            def validate(folder: Path = folder, keys: int = keys) -> None:
                stack, findings = load_stack([str(folder)])
                assert stack is not None and len(stack.keys) == keys, findings[:5]

            floor_s = best_of(args.repeat, floor)
            nogc_s = best_of(args.repeat, floor, no_gc=True)
            validate_s = best_of(args.repeat, validate)
            per_key[keys] = validate_s / keys * 1e6
            print(f"{keys:>7} {len(files):>5} {size:>6.1f} {floor_s:>8.3f} {nogc_s:>8.3f} "
                  f"{validate_s:>10.3f} {validate_s / floor_s:>5.2f}x "
                  f"{validate_s / nogc_s:>9.2f}x {per_key[keys]:>7.1f}")
            for file in files:
                os.unlink(file)
    sizes = sorted(per_key)
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        print(f"per-key cost at {large} keys / at {small} keys: "
              f"{per_key[large] / per_key[small]:.2f} (1.00 = linear)")


if __name__ == "__main__":
    main()
