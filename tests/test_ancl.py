"""ANCL (A-EWC) as an optax transform and as a method of the loop: the auxiliary pull's
gradient by hand next to EWC's, its replacement per task, and through a two-task cycle the
auxiliary stage (trained from the held agent, which then trains again from where it stood,
pulled toward the auxiliary network), its resumption after a kill, and one compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from nbsp_jax import method, training
from tests.conftest import tiny_config


def test_aux_pull_adds_lambda_a_fisher_times_distance_to_the_auxiliary_network():
    params = {"w": jnp.array([1.0, 2.0, 3.0])}
    opt = optax.chain(method.ewc(0.5), method.aux_anchor(2.0), optax.sgd(1.0))
    state = opt.init(params)
    grads = {"w": jnp.array([0.1, 0.1, 0.1])}
    # Earlier task: F = [1, 0, 4] at theta* = [0, 0, 1] (EWC, lambda 0.5): [0.5, 0, 4].
    state = method.consolidate(state, {"w": jnp.array([1.0, 0.0, 4.0])},
                               {"w": jnp.array([0.0, 0.0, 1.0])})
    # Auxiliary network: F_aux = [2, 1, 0] at theta_aux = [3, 0, 0] (lambda_a 2):
    # 2 * [2 * (1 - 3), 1 * (2 - 0), 0] = [-8, 4, 0].
    state = method.set_aux_anchor(state, {"w": jnp.array([2.0, 1.0, 0.0])},
                                  {"w": jnp.array([3.0, 0.0, 0.0])})
    step = jax.jit(opt.update)
    upd, _ = step(grads, state, params)
    # sgd(1) negates the sum: -(0.1 + [0.5, 0, 4] + [-8, 4, 0]).
    np.testing.assert_allclose(upd["w"], [7.4, -4.1, -4.1], rtol=1e-6)
    # The next task's auxiliary network replaces this one (EWC's sums add up instead):
    # F_aux = [0, 0, 1] at [0, 0, 5]: 2 * [0, 0, -2] = [0, 0, -4].
    state = method.set_aux_anchor(state, {"w": jnp.array([0.0, 0.0, 1.0])},
                                  {"w": jnp.array([0.0, 0.0, 5.0])})
    upd, _ = step(grads, state, params)
    np.testing.assert_allclose(upd["w"], [-0.6, -0.1, -0.1], rtol=1e-6)
    assert step._cache_size() == 1  # new anchors are values, not shapes
    np.testing.assert_allclose(method.get_aux_anchor(state).anchored["w"], [0.0, 0.0, 5.0])
    # EWC's consolidation leaves the auxiliary state alone, and the other way round.
    np.testing.assert_allclose(method.get_ewc(state).fisher["w"], [1.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="no AuxAnchorState"):
        method.get_aux_anchor(optax.chain(method.ewc(1.0), optax.sgd(1.0)).init(params))


KW = dict(tasks=("reach", "window-open"), steps_per_task=400, learning_starts=100,
          eval_episodes=1, ancl_aux_steps=200, ancl_lambda=1e4)
# EWC's pull toward phase 1's end off, so that the auxiliary pull alone shows; its Fisher is
# consolidated all the same.
NO_EWC = dict(KW, ewc_lambda=0.0)


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _watch_aux_end(monkeypatch) -> list:
    """Records, at each end of an auxiliary stage, the held and the auxiliary agents and the
    agent it returns."""
    from nbsp_jax.training.phase import PhaseRun

    seen, original = [], PhaseRun.end_aux

    def end_aux(self, *a, **k):
        held, aux = jax.device_get(self.device.held), jax.device_get(self.state)
        device, host = original(self, *a, **k)
        seen.append((held, aux, jax.device_get(device.state), host))
        return device, host

    monkeypatch.setattr(PhaseRun, "end_aux", end_aux)
    return seen


@pytest.mark.slow
def test_ancl_through_the_loop(tmp_path, monkeypatch):
    """Forked from a sac run's end of phase 1: phase 2 first trains the auxiliary agent from
    that network for ancl_aux_steps, then the agent trains from phase 1's end (not from the
    auxiliary's) with the pull toward the auxiliary network installed (F_aux * theta_aux),
    which keeps its highest-Fisher parameters (the actor's output-head biases) near the
    auxiliary's; every function compiles once."""
    src = tmp_path / "sac"
    training.train_and_evaluate(tiny_config(method="sac", save_fork_point=True,
                                            save_score_record=True, **KW), str(src))
    seen = _watch_aux_end(monkeypatch)
    r = training.train_and_evaluate(tiny_config(method="ancl", fork_from=str(src), **NO_EWC),
                                    str(tmp_path / "ancl"))
    assert len(seen) == 1  # one auxiliary stage: phase 2's
    held, aux, main, host = seen[0]
    assert host.stage == "main" and host.steps == 0
    rec = np.load(src / "neurons" / "phase01_reach_record.npz")
    for k, v in _flat(held.params.actor).items():
        np.testing.assert_array_equal(v, rec[f"params/actor/{k}"])  # phase 1's end
    # The agent goes on from where it stood, not from the trained auxiliary agent.
    jax.tree.map(np.testing.assert_array_equal, main.params, held.params)
    heads = ("params/mean/bias", "params/log_std/bias")
    a_aux, a_held = _flat(aux.params.actor), _flat(held.params.actor)
    assert all(np.abs(a_aux[k] - a_held[k]).max() > 1e-3 for k in heads)
    pull = method.get_aux_anchor(main.opt.actor)
    f, b = _flat(pull.fisher), _flat(pull.anchored)
    assert all(f[k].max() > 0 for k in heads)
    for k in f:
        np.testing.assert_allclose(b[k], f[k] * a_aux[k], rtol=1e-5, atol=1e-7)
    # EWC's Fisher from phase 1 is in place beside it.
    assert _flat(method.get_ewc(main.opt.actor).fisher)["params/mean/bias"].max() > 0
    # The pull holds the head biases near the auxiliary network's through phase 2.
    end = _flat(r["state"].params.actor)
    gap = lambda p: np.concatenate([np.abs(p[k] - a_aux[k]).ravel() for k in heads]).mean()
    assert gap(end) < 0.25 * gap(a_held), (gap(end), gap(a_held))
    p1, p2 = r["phases"]
    assert p1["ancl_aux"] is None
    assert p2["ancl_aux"]["env_steps"] == 200 and p2["env_steps"] == 400
    assert len(p2["ancl_aux"]["train_success_rate"]) == 2
    c = r["compilations"]
    assert c["aux_start"] == 1 and c["aux_end"] == 1 and max(c.values()) == 1, c


@pytest.mark.slow
def test_ancl_resumed_in_its_auxiliary_stage(tmp_path, monkeypatch):
    """A run killed during phase 2's auxiliary stage (after a checkpoint there) resumes it with
    the held agent restored: the agent's main training again starts from phase 1's end, and
    the auxiliary stage spends its budget once."""
    from nbsp_jax.training.phase import PhaseRun

    kw = dict(KW, ancl_lambda=10.0, checkpoint_every_s=1e-6)
    original, calls = PhaseRun.checkpoint, []

    def killed(self, *a, **k):
        original(self, *a, **k)
        if self.aux:
            calls.append(self.steps)
            if len(calls) == 2:
                raise RuntimeError("killed")

    monkeypatch.setattr(PhaseRun, "checkpoint", killed)
    with pytest.raises(RuntimeError, match="killed"):
        training.train_and_evaluate(tiny_config(method="ancl", save_score_record=True, **kw),
                                    str(tmp_path / "run"))
    monkeypatch.setattr(PhaseRun, "checkpoint", original)
    assert 0 < calls[-1] < 200
    seen = _watch_aux_end(monkeypatch)
    r = training.train_and_evaluate(tiny_config(method="ancl", save_score_record=True, **kw),
                                    str(tmp_path / "run"))
    held, _, main, _ = seen[0]
    rec = np.load(tmp_path / "run" / "neurons" / "phase01_reach_record.npz")
    for k, v in _flat(main.params.actor).items():
        np.testing.assert_array_equal(v, rec[f"params/actor/{k}"])
    assert r["phases"][1]["ancl_aux"]["env_steps"] == 200
