"""Task cycles: evaluation matrix and metrics, early phase end, NaN stop, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax import metrics, training
from nbsp_jax.agents import sac
from nbsp_jax.domains import metaworld as metaworld_domain
from nbsp_jax.types import EpisodeStats, Step
from nbsp_jax.workdir.checkpoint import Checkpointer
from tests.conftest import tiny_config, xla_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_two_task_cycle_results_follow_from_sr(tmp_path):
    c = tiny_config(tasks=("reach", "window-open"), cycles=2, steps_per_task=300,
                    learning_starts=100, eval_episodes=2, method="nbsp", replay_store_size=50)
    r = training.train_and_evaluate(c, str(tmp_path))
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["tasks"] == ["reach", "window-open", "reach", "window-open"]
    sr = np.asarray(saved["sr"])
    assert sr.shape == (2, 4, 4)
    # Columns of the same task hold the same evaluation.
    np.testing.assert_array_equal(sr[:, :, 0], sr[:, :, 2])
    per_seed = [metrics.continual_metrics(m) for m in sr]
    for name in ("asr", "fm", "fwt"):
        values = [m[name] for m in per_seed]
        assert saved["metrics"][name]["per_seed"] == pytest.approx(values)
        assert saved["metrics"][name]["mean"] == pytest.approx(np.mean(values))
    assert saved["versions"]["jax"] == jax.__version__
    assert r["checkpoint_bytes"] > 0
    # Four phases, new masks and replay after each: every jitted function compiled once.
    assert saved["compilations"] == {"act": 1, "act_eval": 1, "act_sampled_eval": 1, "add": 1,
                                     "update": 1, "end_task": 1, "store": 1, "probe": 1,
                                     "drift": 1}
    for p in saved["phases"]:  # both policies evaluated on the phase's task
        assert len(p["eval_sampled_success_rate"]) == 2 and len(p["eval_success_rate"]) == 2
    # Success at the episode's last step: the same episodes, so never above any-step success.
    last = np.asarray(saved["sr_last_step"])
    assert last.shape == (2, 4, 4) and (last <= sr + 1e-12).all()
    np.testing.assert_array_equal(last[:, :, 0], last[:, :, 2])
    assert saved["metrics_last_step"]["fm"]["per_seed"] == pytest.approx(
        [metrics.continual_metrics(m)["fm"] for m in last])
    m = saved["metrics_last_step"]["asr"]
    assert (f"| nbsp (success at the last step) | reach → window-open (x2) | 2 | "
            f"{m['mean']:.3f} ± {m['stderr']:.3f} |") in open(tmp_path / "results.md").read()
    assert len(os.listdir(tmp_path / "neurons")) == 4


def test_update_gate_keeps_inactive_seed_state():
    learner = training.make_learner(tiny_config(chunk_steps=4))
    state = jax.vmap(lambda k: sac.init_state(learner.agent, k))(training.seed_keys(0, 2))
    from tests.test_nbsp import _filled

    buf = jax.vmap(lambda _: _filled(64, 0.0))(jnp.arange(2))
    before = jax.device_get(state.params)
    new, _ = learner.update(state, buf, buf, jnp.int32(0), jnp.array([False, True]))
    for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(new.params)),
                    strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # gated off: bit-identical
    k0 = new.params.actor["params"]["fc0"]["kernel"][1]
    assert not np.allclose(k0, before.actor["params"]["fc0"]["kernel"][1])


class ShortEpisodes:
    """Stand-in env (the subject here is the early-stop gating): 5-step episodes; seed 0
    succeeds in every episode, seed 1 never."""

    def __init__(self, task, num_seeds, num_envs, seed, backend="envpool"):
        self.shape, self.t = (num_seeds, num_envs), 0

    def reset(self):
        return np.zeros(self.shape + (39,), np.float32)

    def step(self, actions):
        self.t += 1
        s, e = self.shape
        z = np.zeros(self.shape, bool)
        done = np.full(self.shape, self.t % 5 == 0)
        success = np.zeros(self.shape, bool)
        success[0] = True
        stats = EpisodeStats(np.repeat(np.arange(s), e)[done.ravel()],
                             np.zeros(done.sum()), np.full(done.sum(), 5),
                             success.ravel()[done.ravel()])
        return Step(np.zeros(self.shape + (39,), np.float32), np.ones(self.shape, np.float32),
                    z, done, success, ~z), stats

    def close(self):
        pass


@pytest.mark.slow
def test_early_stop_gates_the_seed_that_met_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(metaworld_domain, "SeedVecEnv", ShortEpisodes)
    c = tiny_config(steps_per_task=200, learning_starts=20, chunk_steps=10, eval_episodes=0)
    r = training.train_and_evaluate(c, str(tmp_path))
    p = r["phases"][0]
    # Seed 0 has 10 successful episodes (window 10, threshold 0.9) after 50 steps.
    assert p["steps_to_threshold"] == [50, None]
    assert p["seed_env_steps"] == [50, 200] and p["env_steps"] == 200
    rows = [json.loads(x) for x in open(tmp_path / "seed_0" / "metrics.jsonl")]
    assert max(x["step"] for x in rows if "charts/episodic_return" in x) == 50


@pytest.mark.slow
def test_nan_stops_with_seed_step_quantity_and_keeps_checkpoint(tmp_path, monkeypatch):
    original = sac.update_many

    def poisoned(agent, state, sampler, n, step0):
        new, info = original(agent, state, sampler, n, step0)
        # From gradient step 800 on (phase 2 of this run), qf1_loss is NaN.
        info["qf1_loss"] = jnp.where(step0 >= 800, jnp.nan, info["qf1_loss"])
        return new, info

    monkeypatch.setattr(sac, "update_many", poisoned)
    c = tiny_config(tasks=("reach", "window-open"), steps_per_task=500, learning_starts=100)
    with pytest.raises(FloatingPointError, match=r"non-finite qf1_loss = nan for seed 0 at env "
                                                 r"step \d+ of phase 2 \(window-open\)"):
        training.train_and_evaluate(c, str(tmp_path))
    ckpt = Checkpointer(str(tmp_path))
    template = training.init_run(c, training.make_learner(c), 2)[0]
    _, host = training.restore(ckpt, ckpt.latest_step(), template)
    assert host.phase == 1 and host.steps == 0  # the end of phase 1, intact
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_sigkill_mid_phase_then_resume(tmp_path):
    workdir = tmp_path / "run"
    args = [sys.executable, "-m", "nbsp_jax.train", "--config", "configs/quickstart.py:smoke",
            "--workdir", str(workdir), "--config.tasks=('reach', 'window-open')",
            "--config.steps_per_task=2500", "--config.checkpoint_every_s=1",
            "--config.progress=False", "--config.num_seeds=2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Wait until phase 2 has a mid-phase checkpoint, then kill without warning.
    deadline = time.time() + 240
    phase1_wall = None
    while time.time() < deadline:
        time.sleep(0.5)
        ck = workdir / "checkpoints"
        steps = sorted(int(x) for x in os.listdir(ck) if x.isdigit()) if ck.exists() else []
        if len(steps) >= 1:
            try:  # the run deletes old steps as it goes (max_to_keep): one may vanish here
                latest = Checkpointer(str(workdir)).latest_step()
                host = (json.loads((ck / str(latest) / "host" / "metadata").read_text())
                        if latest else None)
            except FileNotFoundError:
                continue
            if host and host["phase"] == 1 and host["steps"] > 0:
                phase1_wall = host["phases"][0]["wall_s"]
                break
    assert phase1_wall is not None, proc.stderr.read()[-3000:] if proc.poll() else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "results.json").exists()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stdout
    results = json.load(open(workdir / "results.json"))
    assert [p["task"] for p in results["phases"]] == ["reach", "window-open"]
    # Phase 1 was not trained again: its record is the one from before the kill.
    assert results["phases"][0]["wall_s"] == phase1_wall
    assert results["phases"][1]["env_steps"] == 2500
    assert max(results["compilations"].values()) <= 1, results["compilations"]
    assert np.asarray(results["sr"]).shape == (2, 2, 2)


def test_non_finite_parameter_is_named():
    from types import SimpleNamespace

    from nbsp_jax.training.state import check_params

    host = SimpleNamespace(phase=0, steps=7)  # the HostState fields the message uses
    params = {"actor": {"fc0": jnp.ones((2, 3, 4)), "fc1": jnp.ones((2, 4))}}
    check_params(params, host, ["reach"])  # all finite: no error
    params["actor"]["fc1"] = params["actor"]["fc1"].at[1, 2].set(jnp.inf)
    with pytest.raises(FloatingPointError, match=r"parameter \['actor'\]\['fc1'\] for seed 1 "
                                                 r"at env step 7 of phase 1 \(reach\)"):
        check_params(params, host, ["reach"])


def test_seed_axis_map_equals_vmap():
    from tests.test_nbsp import _filled

    buf = jax.vmap(lambda _: _filled(64, 0.0))(jnp.arange(2))
    out = {}
    for mode in ("vmap", "map"):
        learner = training.make_learner(tiny_config(chunk_steps=4, seed_axis=mode))
        state = jax.vmap(lambda k, lr=learner: sac.init_state(lr.agent, k))(
            training.seed_keys(0, 2))
        out[mode] = jax.device_get(learner.update(state, buf, buf, jnp.int32(0),
                                                  jnp.ones(2, bool)))
    for a, b in zip(jax.tree.leaves(out["vmap"]), jax.tree.leaves(out["map"]), strict=True):
        if jnp.issubdtype(a.dtype, jnp.floating):
            # Different matmul kernels round differently; a mixed-up seed would be far off.
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_act_on_host_needs_a_second_device(tmp_path):
    c = tiny_config(act_on="host")
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=2"):
        training.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.slow
def test_act_on_host_overlaps_and_completes(tmp_path):
    """The policy acts on a second host device with the previous chunk's parameters while
    the update runs; the run completes with its losses checked and nothing recompiled."""
    env = xla_env("--xla_force_host_platform_device_count=2")
    out = subprocess.run(
        [sys.executable, "-m", "nbsp_jax.train", "--config", "configs/quickstart.py:smoke",
         "--workdir", str(tmp_path), "--config.act_on=host", "--config.progress=False",
         # Acting starts mid-chunk, before the first update (a bug once).
         "--config.learning_starts=530"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert np.asarray(r["sr"]).shape == (2, 2, 2)
    assert all(n == 1 for n in r["compilations"].values()), r["compilations"]
    assert all(p["act_s"] > 0 and p["learn_s"] > 0 for p in r["phases"])


@pytest.mark.slow
def test_fork_from_a_runs_phase_one(tmp_path):
    """A method forked from another run's end of phase 1 shares its phase-1 network (same sr
    row after phase 1, same scoring record), then goes its own way; its drift and constant
    units are logged; a source trained with another phase-1 config is refused by name."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=300, learning_starts=100,
              eval_episodes=2, replay_store_size=50, save_score_record=True)
    src = tmp_path / "sac"
    # The source trains phase 1 only (as the ablation runs it), the fork runs, then the source
    # resumes its phase 2.
    stopped = training.train_and_evaluate(
        tiny_config(method="sac", save_fork_point=True, stop_after_phase=1, **kw), str(src))
    assert stopped["stopped_after_phase"] == 1 and stopped["num_phases"] == 2
    assert os.listdir(src / training.FORK_POINT) and not (src / "results.json").exists()
    b = training.train_and_evaluate(
        tiny_config(method="nbsp", selector="random", fork_from=str(src), **kw),
        str(tmp_path / "nbsp"))
    a = training.train_and_evaluate(tiny_config(method="sac", save_fork_point=True, **kw), str(src))
    assert [p["env_steps"] for p in a["phases"]] == [300, 300]
    sa, sb = np.asarray(a["sr"]), np.asarray(b["sr"])
    np.testing.assert_array_equal(sb[:, 0], sa[:, 0])  # the same network after phase 1
    rec = lambda d: np.load(d / "neurons" / "phase01_reach_record.npz")
    for k in ("obs", "goal", "params/actor/params/fc0/kernel"):
        np.testing.assert_array_equal(rec(tmp_path / "nbsp")[k], rec(src)[k])
    # Phase 2 differs (masks and replay only in the forked nbsp run).
    ka = a["state"].params.actor["params"]["fc0"]["kernel"]
    assert not np.allclose(ka, b["state"].params.actor["params"]["fc0"]["kernel"])
    pb = b["phases"][1]
    assert len(pb["actor_drift"]) == 2 and len(pb["actor_drift"][0]) == 1
    assert pb["actor_drift"][0][0] > 0
    assert pb["constant_units"][0]["actor/fc0"][1] == 32
    assert b["phases"][0]["env_steps"] == 300
    # Restored (committed) and fresh arrays are placed alike: nothing compiles twice.
    assert max(b["compilations"].values()) == 1, b["compilations"]
    with pytest.raises(ValueError, match="hidden"):
        training.train_and_evaluate(tiny_config(method="nbsp", fork_from=str(src), hidden=(16, 16),
                                             **kw), str(tmp_path / "bad"))
    with pytest.raises(FileNotFoundError, match="no fork point"):
        training.train_and_evaluate(tiny_config(method="nbsp", fork_from=str(tmp_path / "nbsp"),
                                             **kw), str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()  # refused before anything was written


class ScriptedEval:
    """Stand-in evaluation pool (the subject is the evaluation's bookkeeping): seed 0's
    episodes last 3 steps, seed 1's 4; ``SUCCESS[s][e]`` lists the steps (1-based) on which
    env ``e`` of seed ``s`` reports success. After its episode ends an env sends one invalid
    reset step (with success set, which must not count) and then a new episode's steps."""

    LENGTH = (3, 4)
    SUCCESS = (((1,), (3,)), ((), (2, 4)))

    def __init__(self):
        self.t = 0

    def reset(self):
        return np.zeros((2, 2, 39), np.float32)

    def step(self, actions):
        self.t += 1
        shape = (2, 2)
        valid, succ, trunc = np.ones(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
        for s in range(2):
            L = self.LENGTH[s]
            for e in range(2):
                if self.t == L + 1:  # the reset step after the episode
                    valid[s, e], succ[s, e] = False, True
                elif self.t > L + 1:  # the next episode: succeeds at once
                    succ[s, e] = True
                else:
                    succ[s, e] = self.t in self.SUCCESS[s][e]
                    trunc[s, e] = self.t == L
        step = Step(np.zeros(shape + (39,), np.float32), np.zeros(shape, np.float32),
                    np.zeros(shape, bool), trunc, succ, valid)
        return step, None

    def close(self):
        pass


def test_evaluation_reports_success_at_any_step_and_at_the_last_step():
    from types import SimpleNamespace

    from nbsp_jax.training.evaluate import evaluate

    dom = SimpleNamespace(make_env=lambda *a, **k: ScriptedEval(), metric="asr",
                          goal_step=lambda env, step: step,
                          eval_score=lambda task, x: x.mean(axis=1))
    learner = SimpleNamespace(domain=dom, act_eval=lambda p, obs, keys: (
        jnp.zeros(obs.shape[:2] + (4,)), keys))
    c = tiny_config(eval_episodes=2, num_seeds=2)
    any_step, last = evaluate(learner, None, "reach", c, 0, last_step=True)
    # Seed 0: env 0 succeeded at step 1 only, env 1 at its last step 3 -> any 1.0, last 0.5.
    # Seed 1: env 0 never; env 1 at steps 2 and 4 (its last) -> any 0.5, last 0.5.
    np.testing.assert_allclose(any_step, [1.0, 0.5])
    np.testing.assert_allclose(last, [0.5, 0.5])
    np.testing.assert_allclose(evaluate(learner, None, "reach", c, 0), [1.0, 0.5])
