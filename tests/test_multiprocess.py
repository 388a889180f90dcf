"""A run launched as 2 processes (jax.distributed on CPU) against the same seeds run alone."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # end-to-end: whole training runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = os.path.join(ROOT, "tests", "scripts", "process_run.py")


def _run(workdir, num_seeds, offset, env=None, wait=True):
    proc = subprocess.Popen([sys.executable, SCRIPT, str(workdir), str(num_seeds),
                             str(offset)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _result(proc) if wait else proc


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_process_run_equals_its_seed_blocks_run_alone(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = lambda i: {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                     "JAX_PROCESS_ID": str(i), "JAX_PLATFORMS": "cpu"}
    procs = [_run(tmp_path / "multi", 4, 0, env(i), wait=False) for i in range(2)]
    multi = [_result(p) for p in procs]
    alone = [_run(tmp_path / f"alone{k}", 2, 2 * k) for k in range(2)]

    # Process i trained global seeds 2i, 2i + 1: the same parameters as those seeds run alone.
    for i in range(2):
        assert multi[i]["process"] == i
        np.testing.assert_allclose(multi[i]["kernel_sums"], alone[i]["kernel_sums"], rtol=1e-6)
    assert alone[0]["kernel_sums"] != alone[1]["kernel_sums"]  # the blocks are different seeds
    # Every process returns the merged results over all 4 seeds, in global seed order.
    merged = json.loads((tmp_path / "multi" / "results.json").read_text())
    assert merged["num_seeds"] == 4 and merged["processes"] == 2
    for key in ("episodic_return", "train_success_rate", "seed_env_steps"):
        want = alone[0]["phases"][0][key] + alone[1]["phases"][0][key]
        assert merged["phases"][0][key] == want == multi[1]["phases"][0][key]
    assert merged["sr"] == alone[0]["sr"] + alone[1]["sr"]
    assert len(set(merged["phases"][0]["episodic_return"])) > 1  # seeds saw different episodes
    # Each process kept its own seeds' logs and checkpoints.
    for i in range(2):
        sub = tmp_path / "multi" / f"process_{i}"
        assert sorted(os.listdir(sub / "checkpoints")) and (sub / f"seed_{2 * i + 1}").is_dir()
    assert (tmp_path / "multi" / "success.png").exists()
