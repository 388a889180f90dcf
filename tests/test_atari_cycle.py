"""The paper's Atari cycle end to end: `configs/atari_pong_bowling.py:smoke`, 2 seeds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nbsp_jax import method, metrics

pytestmark = pytest.mark.slow  # end-to-end: whole training runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    pytest.importorskip("envpool")
    workdir = tmp_path_factory.mktemp("atari") / "run"
    out = subprocess.run(
        [sys.executable, "-m", "nbsp_jax.train", "--config", "configs/atari_pong_bowling.py:smoke",
         "--workdir", str(workdir), "--config.progress=False"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with open(workdir / "results.json") as f:
        return workdir, json.load(f), out.stdout


def test_results_hold_ar_fm_fwt_from_sr(smoke_run):
    workdir, r, stdout = smoke_run
    assert r["tasks"] == ["Pong", "Bowling", "Pong", "Bowling"]
    sr = np.asarray(r["sr"])
    assert sr.shape == (2, 4, 4)
    assert set(r["metrics"]) == {"ar", "fm", "fwt"}
    want = metrics.metrics_for(sr, atari=True)
    for k in ("ar", "fm", "fwt"):
        np.testing.assert_allclose(r["metrics"][k]["per_seed"], want[k])
    # sr holds Table-7-normalised raw returns of whole games: one game per seed here, so
    # each entry maps back to an integer raw score.
    for j, game in enumerate(r["tasks"]):
        random_score, human_score = metrics.ATARI_SCORES[game]
        raw = sr[:, :, j] * (human_score - random_score) + random_score
        np.testing.assert_allclose(raw, np.round(raw), atol=1e-6)
    assert "| nbsp | Pong → Bowling (x2) | 2 |" in (workdir / "results.md").read_text()
    assert "AR" in stdout and "eval normalised return" in stdout


def test_phases_scores_and_compilations(smoke_run):
    workdir, r, _ = smoke_run
    for p in r["phases"]:
        assert p["env_steps"] == 1000 and p["goal_metric"] == ["return", "return"]
        assert p["steps_to_threshold"] == [None, None]  # no early stop on Atari
    # Nothing recompiles after the first task (new games, masks and buffers are values).
    assert all(n == 1 for n in r["compilations"].values()), r["compilations"]
    z = np.load(workdir / "neurons" / "phase01_Pong.npz")
    # Conv neurons are channels: 32/64/64 per trunk, then the dense layer; 20 % are skill.
    assert z["actor/conv0/score"].shape == (2, 32) and z["qf2/fc0/mask"].shape == (2, 64)
    n_skill = sum(z[f"actor/{k}/skill"].sum(axis=1) for k in ("conv0", "conv1", "conv2", "fc0"))
    np.testing.assert_array_equal(n_skill, [method.num_selected(224, 0.2)] * 2)
    assert (workdir / "return.png").exists() and (workdir / "sr.png").exists()
