"""benchmarks/device_check.py's CPU smoke (--dry-run): the path the GPU check takes, tiny."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_dry_run_writes_every_part(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--dry-run",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.load(open(tmp_path / "device_check.json"))
    assert rec["device"]["backend"] == "cpu" and rec["dry_run"]
    # 2 settings x 2 seed counts, each with a positive rate and a compile time.
    assert [(r["setting"], r["seeds"]) for r in rec["updates"]] == [
        ("continuous", 1), ("continuous", 2), ("atari", 1), ("atari", 2)]
    assert all(r["updates_per_s"] > 0 and r["compile_s"] > 0 for r in rec["updates"])
    (train,) = rec["training"]  # act_on='host' needs a second host device: skipped, and said
    assert train["act_on"] == "learner" and train["env_steps"] == 600
    assert rec["skipped"] == ["training act_on=host (one CPU device)"]


def test_budget_skips_parts_and_says_which(tmp_path):
    from benchmarks import device_check

    assert device_check.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "0"]) == 0
    rec = json.load(open(tmp_path / "device_check.json"))
    assert rec["updates"] == [] and rec["training"] == []
    assert rec["skipped"][:2] == ["continuous [32, 32] x1", "continuous [32, 32] x2"]
    assert rec["skipped"][-2:] == ["training act_on=learner", "training act_on=host"]
