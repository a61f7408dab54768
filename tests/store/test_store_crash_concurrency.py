"""Crash consistency (kill -9 at random moments) and concurrent writers, on stores of their own,
driven through subprocesses (tests/store/kms_worker.py) and checked with the real CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from kms_support import WORKER, kmsplan, worker


def test_kill_9_at_random_moments_leaves_a_consistent_working_store(fresh_store_dir):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    kills = 0
    for run in range(6):
        proc = subprocess.Popen([sys.executable, str(WORKER), "churn", str(fresh_store_dir), str(seed + run),
                                 str(run * 1000)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.6))
            assert proc.poll() is None, f"the churn died on its own (seed {seed}): {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
    assert kills == 6

    result = worker("verify", str(fresh_store_dir))
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    report = json.loads(result.stdout)
    assert report["problems_after_open"] == [], f"seed {seed}"
    assert report["problems_at_end"] == [], f"seed {seed}"
    assert report["failures"] == [], f"seed {seed}"
    assert sum(report["keys"].values()) > 0 and report["used"] > 0, f"seed {seed}: the churn made no keys"
    assert report["audit"][1] == "None", f"seed {seed}: audit chain broken: {report['audit']}"

    check = kmsplan("store", "check", "--store", str(fresh_store_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    verify = kmsplan("audit", "verify", "--store", str(fresh_store_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_concurrent_processes_create_and_encrypt_without_corruption(fresh_store_dir):
    workers, per_worker = 3, 16
    procs = []
    for n in range(workers):
        # The workers open the store one after the other (opens racing each other are the next
        # test's subject), then all create, replicate and encrypt at the same time.
        proc = subprocess.Popen([sys.executable, str(WORKER), "load", str(fresh_store_dir), f"w{n}", str(per_worker)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "opened", proc.stderr.read()
        procs.append(proc)
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    made = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        made += json.loads(out)
    assert len(made) == workers * per_worker
    assert len({item["key"] for item in made}) == workers * per_worker

    info = kmsplan("store", "info", "--store", str(fresh_store_dir))
    assert info.returncode == 0, info.stderr
    counts = json.loads(info.stdout)["regions"]
    home, away = json.loads((fresh_store_dir / "store.json").read_text())["regions"]
    assert counts[home] == workers * per_worker, "every key created is listed, once"
    assert counts[away] == sum(item["multi"] for item in made)

    blobs = fresh_store_dir.parent / "blobs.json"
    blobs.write_text(json.dumps(made))
    result = worker("verify", str(fresh_store_dir), str(blobs))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["problems_after_open"] == [] and report["problems_at_end"] == []
    assert report["failures"] == []
    assert report["used"] >= 2 * len(made)

    check = kmsplan("store", "check", "--store", str(fresh_store_dir))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "consistent" in check.stdout
    verify = kmsplan("audit", "verify", "--store", str(fresh_store_dir))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # each worker made 1 create, 1 encrypt, 1 decrypt, 1 data key and 1 decrypt per key (+1 replicate for MRKs)
    minimum = len(made) * 5 + sum(item["multi"] for item in made)
    assert int(verify.stdout.split(":")[1].split()[0]) >= minimum


def test_processes_opening_the_store_at_the_same_time_all_succeed(fresh_store_dir):
    """Several commands started together (plan and drift in one CI run, parallel workers) each open
    the store, which logs in to every region's token: none of them may fail to open it."""
    procs = [subprocess.Popen([sys.executable, str(WORKER), "reopen", str(fresh_store_dir), "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(err.strip().splitlines()[-1])
    assert failures == [], f"{len(failures)} of {len(procs)} processes could not open the store: {failures}"
