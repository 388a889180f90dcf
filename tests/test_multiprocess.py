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

SCRIPTS = os.path.join(ROOT, "tests", "scripts")


def _run(workdir, *args, env=None, wait=True, script="process_run.py"):
    """Runs ``tests/scripts/<script> workdir *args`` (process_run.py: num_seeds, offset)."""
    proc = subprocess.Popen([sys.executable, os.path.join(SCRIPTS, script), str(workdir),
                             *map(str, args)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _result(proc) if wait else proc


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _two_process_env():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    return lambda i: {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                      "JAX_PROCESS_ID": str(i), "JAX_PLATFORMS": "cpu"}


def test_two_process_run_equals_its_seed_blocks_run_alone(tmp_path):
    env = _two_process_env()
    procs = [_run(tmp_path / "multi", 4, 0, env=env(i), wait=False) for i in range(2)]
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


def test_each_process_checkpoints_and_restores_its_own_state(tmp_path):
    """Two processes save 30 process-local checkpoints each at the same time, then restore
    their latest as a resumed run does. Orbax's defaults failed this in two ways: the saves'
    signal keys were shared between processes (a save hung or died on the other's step
    directory), and process 1's checkpoints held no arrays (orbax writes NumPy on process 0)."""
    env = _two_process_env()
    procs = [_run(tmp_path, 30, env=env(i), wait=False, script="process_checkpoints.py")
             for i in range(2)]
    got = [_result(p) for p in procs]
    for i, g in enumerate(got):
        v = 100.0 * i + 29  # process i's value at its last step
        assert g["process"] == i and g["latest"] == 29 and g["host"] == {"step": 29, "process": i}
        assert g["kept"] == ["28", "29"]  # max_to_keep=2
        assert g["loose"] == [v] * 3 and g["pinned"] == [v] * 2 and g["host_side"] == [v] * 2
        assert g["numpy"] == "ndarray" and g["committed"] == [False, True] and g["key_matches"]
