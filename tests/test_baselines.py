"""The baselines of Table 1 as methods of the training loop: EWC's end-of-task Fisher against
closed forms, its penalty through a two-task cycle, the CLI on Meta-World and Atari."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from nbsp_jax import method, training
from nbsp_jax.agents import sac, sac_discrete
from nbsp_jax.domains import metaworld as metaworld_domain
from nbsp_jax.training.learner import consolidate_task
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Config:
    ewc_decay = 1.0


def _ewc_agent(obs_dim=3, action_dim=2):
    opt = optax.chain(method.ewc(1.0), optax.adam(1e-3))
    return sac.make_sac(obs_dim, action_dim, hidden=(8,), actor_opt=opt, q_opt=opt)


def test_ewc_fisher_of_a_task_matches_the_gaussian_closed_form():
    """On one state repeated, the actor's Fisher for the mean head's bias is 1 / sigma^2 and
    for the log-std head's bias 2 (d log_std / d b)^2 (the Gaussian's Fisher of mu and of
    log sigma); the critics' Fisher for each output bias is exactly 1; invalid rows (another
    state) count for nothing; the anchors are F * theta at the end of the task."""
    agent = _ewc_agent()
    state = sac.init_state(agent, jax.random.key(0))
    T = 8192
    s0 = jnp.array([0.3, -0.2, 0.5])
    valid = jnp.arange(T) % 4 != 3  # a quarter of the rows invalid, at another state
    obs = jnp.where(valid[:, None], s0, 50.0)
    action = jnp.tile(jnp.array([0.1, -0.4]), (T, 1))
    new = consolidate_task(_Config(), metaworld_domain.MetaWorld, agent, state, obs, action,
                           valid, jax.random.key(1))
    fa = method.get_ewc(new.opt.actor)
    mean, log_std = agent.actor.apply(state.params.actor, s0[None])
    sigma = np.exp(np.asarray(log_std[0]))
    np.testing.assert_allclose(fa.fisher["params"]["mean"]["bias"], 1 / sigma**2, rtol=0.06)
    # d log_std / d b of the tanh-squashed head, by hand: 0.5 (max - min) (1 - tanh^2).
    raw = np.arctanh((np.asarray(log_std[0]) + 5.0) / 3.5 - 1.0)
    dls = 0.5 * 7.0 * (1 - np.tanh(raw) ** 2)
    np.testing.assert_allclose(fa.fisher["params"]["log_std"]["bias"], 2 * dls**2, rtol=0.06)
    fq = method.get_ewc(new.opt.q)
    for net in ("qf1", "qf2"):
        np.testing.assert_allclose(fq.fisher[net]["params"]["out"]["bias"], [1.0], rtol=1e-6)
    flat = lambda t: traverse_util.flatten_dict(t)
    for f, a, p in ((fa.fisher, fa.anchored, state.params.actor),
                    (fq.fisher, fq.anchored, state.params.q)):
        for k, v in flat(f).items():
            np.testing.assert_allclose(flat(a)[k], v * flat(p)[k], rtol=1e-6, atol=1e-12)
    # The opt states are otherwise untouched and the params unchanged.
    assert new.params is state.params


def test_fisher_log_prob_holds_the_action_fixed():
    """Continuous: the value is the pre-squash Gaussian density of the drawn sample (the
    squashed log-prob plus its tanh correction). Its gradient is the score: zero mean over
    draws (a reparameterised gradient would not be). Discrete: log pi of the Gumbel-max
    action."""
    agent = _ewc_agent()
    p = sac.init_state(agent, jax.random.key(3)).params.actor
    obs = jnp.array([[0.3, -0.2, 0.5]])
    noise = jax.random.normal(jax.random.key(4), (4096, 1, 2))
    val = jax.vmap(lambda n: sac.fisher_log_prob(agent, p, obs, n))(noise)
    y, logp = jax.vmap(lambda n: sac.squashed_sample(agent, p, obs, n))(noise)
    np.testing.assert_allclose(val, logp + jnp.log(1 - y**2 + 1e-6).sum(-1), rtol=1e-5,
                               atol=1e-5)
    g = jax.vmap(jax.grad(lambda q, n: sac.fisher_log_prob(agent, q, obs, n)[0]),
                 in_axes=(None, 0))(p, noise)
    b = g["params"]["log_std"]["bias"]  # per draw (z^2 - 1) d log_std / d b: mean 0
    assert np.abs(b.mean(0)).max() < 0.1 * np.abs(b).mean()
    # Discrete: with noise favouring action 2, the value is log_softmax(logits)[2].
    d = sac_discrete.make_sac_discrete(num_actions=3, hidden=(8,), obs_shape=(4, 84, 84))
    dp = sac_discrete.init_state(d, jax.random.key(5)).params.actor
    o = jnp.zeros((1, 4, 84, 84), jnp.uint8)
    gumbel = jnp.array([[0.0, 0.0, 100.0]])
    want = jax.nn.log_softmax(d.actor.apply(dp, o), axis=-1)[0, 2]
    np.testing.assert_allclose(sac_discrete.fisher_log_prob(d, dp, o, gumbel)[0], want,
                               rtol=1e-6)


@pytest.mark.slow
def test_ewc_cycle_pins_the_parameters_task_one_needs(tmp_path):
    """Forked from a sac run's end of phase 1 (the same network), EWC at its default strength
    keeps the actor's output-head biases (its highest-Fisher parameters) at their task-1
    values during phase 2, where vanilla SAC moves them; with strength 0 it is vanilla SAC
    exactly. (Under Adam the F-weighted distance over all parameters is no such measure:
    Adam's normalised steps move the many low-Fisher weights as far as the loss pushes.)"""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=400, learning_starts=100,
              eval_episodes=1, save_score_record=True)
    src = tmp_path / "sac"
    a = training.train_and_evaluate(tiny_config(method="sac", save_fork_point=True, **kw),
                                    str(src))
    b = training.train_and_evaluate(tiny_config(method="ewc", fork_from=str(src), **kw),
                                    str(tmp_path / "ewc"))
    zero = training.train_and_evaluate(
        tiny_config(method="ewc", ewc_lambda=0.0, fork_from=str(src), **kw),
        str(tmp_path / "ewc0"))
    # One update executable across the fork (the forked EWC arm of the CPU Table 1 also
    # recorded end_task 1; the other counts are not asserted here).
    assert b["compilations"]["update"] == 1, b["compilations"]
    rec = np.load(src / "neurons" / "phase01_reach_record.npz")
    heads = ("params/mean/bias", "params/log_std/bias")  # Fisher 1/sigma^2 and ~2 per entry
    flat = lambda r: traverse_util.flatten_dict(jax.device_get(r["state"].params.actor), sep="/")
    moved = lambda r, ks=heads: np.concatenate(
        [np.abs(flat(r)[k] - rec[f"params/actor/{k}"]).ravel() for k in ks])
    assert moved(b).mean() < 0.01 * moved(a).mean(), (moved(b).mean(), moved(a).mean())
    everything = tuple(flat(a))
    np.testing.assert_array_equal(moved(zero, everything), moved(a, everything))


def _fork_is_refused(tmp_path, method_name: str, kw: dict) -> None:
    """A method that acts during phase 1 cannot start from another method's fork point: the
    refusal names why, before anything is written."""
    src = tmp_path / "sac"
    training.train_and_evaluate(tiny_config(method="sac", save_fork_point=True, **kw), str(src))
    with pytest.raises(ValueError, match="acts during phase 1's training"):
        training.train_and_evaluate(tiny_config(method=method_name, fork_from=str(src), **kw),
                                    str(tmp_path / "fork"))
    assert not (tmp_path / "fork").exists()


# Each baseline's switch, with a ReDo period short enough to reset within a smoke phase.
BASELINES = {"ewc": ("--config.method=ewc",),
             "shrink_perturb": ("--config.method=shrink_perturb",),
             "redo": ("--config.method=redo", "--config.redo_every=64"),
             "cbp": ("--config.method=cbp",),
             "npc": ("--config.method=npc",),
             # One pass (2 tasks, 1 injection): each network part costs a pass, and the
             # Atari smoke's 2 cycles would hold 3 injections (7 CNN passes per network).
             "pi": ("--config.method=pi", "--config.cycles=1"),
             "crelu": ("--config.activation=crelu",),
             # The auxiliary stage of phase 2 at a quarter of the phase's steps.
             "ancl": ("--config.method=ancl", "--config.ancl_aux_steps=500")}


@pytest.mark.slow
@pytest.mark.parametrize("config", ["metaworld_window.py:smoke", "atari_pong_bowling.py:smoke"])
@pytest.mark.parametrize("baseline", list(BASELINES))
def test_cli_runs_each_baseline(tmp_path, config, baseline):
    """Every baseline through the CLI on both domains: a whole smoke cycle, every function
    compiled at most once (the update exactly once), plasticity metrics in every phase."""
    if config.startswith("atari"):
        pytest.importorskip("envpool")
    workdir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "nbsp_jax.train", "--config", f"configs/{config}",
         "--workdir", str(workdir), "--config.progress=False", *BASELINES[baseline]],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(workdir / "results.json") as fh:
        r = json.load(fh)
    assert len(r["phases"]) == len(r["tasks"])
    assert r["compilations"]["update"] == 1
    assert all(n <= 1 for n in r["compilations"].values()), r["compilations"]
    assert all(len(p["plasticity"]) == r["num_seeds"] for p in r["phases"])
    if baseline == "redo":
        assert sum(s["actor"] for p in r["phases"] for s in p["redo_resets"]) > 0


def test_crelu_layer_output_record_and_widths():
    """CReLU on a hand-made input: z = x W + b = [3, -5] gives [relu(z), relu(-z)] =
    [3, 0, 0, 5]; the record holds one activation per unit, |z| = [3, 5]; the next layer
    reads both halves; widths h / sqrt(2) keep ReLU's parameter count (within 3 %)."""
    from nbsp_jax.networks import CReLUDense, GaussianActor, QNetwork, hidden_widths, record

    layer = CReLUDense(2)
    params = {"params": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.0, 1.0])}}
    x = jnp.array([[3.0]])
    np.testing.assert_array_equal(layer.apply(params, x), [[3.0, 0.0, 0.0, 5.0]])
    assert hidden_widths((256, 256), "crelu") == (181, 181)
    assert hidden_widths((256, 256), "relu") == (256, 256)
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; valid choices: \('relu', "
                                         r"'crelu'\)"):
        hidden_widths((8,), "gelu")
    obs = jnp.ones((5, 39))
    count = lambda p: sum(v.size for v in jax.tree.leaves(p))
    relu = GaussianActor(4, (256, 256)).init(jax.random.key(0), obs)
    crelu_net = GaussianActor(4, hidden_widths((256, 256), "crelu"), "crelu")
    crelu = crelu_net.init(jax.random.key(0), obs)
    assert crelu["params"]["fc1"]["kernel"].shape == (362, 181)
    assert abs(count(crelu) / count(relu) - 1) < 0.03
    _, acts = record(crelu_net, crelu, obs)
    assert acts["fc0"].shape == (5, 181) and acts["fc1"].shape == (5, 181)
    z0 = obs @ crelu["params"]["fc0"]["kernel"] + crelu["params"]["fc0"]["bias"]
    np.testing.assert_allclose(acts["fc0"], np.abs(z0), rtol=1e-6)
    q = QNetwork((16,), "crelu")
    qp = q.init(jax.random.key(1), obs, jnp.ones((5, 4)))
    assert qp["params"]["out"]["kernel"].shape == (32, 1)


@pytest.mark.slow
def test_crelu_nbsp_cycle_masks_units(tmp_path):
    """activation='crelu' through the loop with NBSP: scores and masks have one entry per
    unit (the kernel's columns, 23 per layer for hidden 32), a fifth of the network's
    units skill neurons; nothing recompiles."""
    r = training.train_and_evaluate(
        tiny_config(method="nbsp", activation="crelu", tasks=("reach", "window-open"),
                    steps_per_task=300, learning_starts=100, replay_store_size=50),
        str(tmp_path / "run"))
    assert all(n == 1 for n in r["compilations"].values()), r["compilations"]
    z = np.load(tmp_path / "run" / "neurons" / "phase01_reach.npz")
    assert z["actor/fc0/score"].shape == (2, 23) and z["qf1/fc1/mask"].shape == (2, 23)
    assert r["state"].params.actor["params"]["fc1"]["kernel"].shape == (2, 46, 23)
    # Plasticity metrics per phase, seed and network, in results.json and the JSONL log.
    for phase in r["phases"]:
        for seed in phase["plasticity"]:
            assert set(seed) == {"actor", "qf1", "qf2"}
            assert set(seed["actor"]) == {"dormant_0", "dormant_0.1", "feature_srank",
                                          "param_norm", "update_norm"}
            assert 0 <= seed["qf1"]["dormant_0"] <= seed["qf1"]["dormant_0.1"] <= 1
            assert 1 <= seed["actor"]["feature_srank"] <= 23
            assert seed["actor"]["update_norm"] > 0
    log = (tmp_path / "run" / "seed_1" / "metrics.jsonl").read_text().splitlines()
    tagged = [json.loads(x) for x in log if "plasticity/qf2/feature_srank" in x]
    assert [x["task"] for x in tagged] == ["reach", "window-open"]
    n_skill = z["actor/fc0/skill"].sum(1) + z["actor/fc1/skill"].sum(1)  # over the network
    np.testing.assert_array_equal(n_skill, [method.num_selected(46, 0.2)] * 2)


def test_plasticity_metrics_on_a_worked_example():
    """Layer a: mean |a| = [0, 2, 2] (the invalid row ignored), s = [0, 1.5, 1.5]; layer b:
    [0.1, 10], s = [0.0198, 1.98]. Of the 5 units, 1 is 0-dormant and 2 are 0.1-dormant.
    Features diag(10, 1, 0.05): 10 / 11.05 < 0.99 <= 11 / 11.05, so srank_0.01 = 2."""
    valid = jnp.array([True, True, False])
    acts = {"fc0": jnp.array([[0.0, 1.0, 2.0], [0.0, -3.0, 2.0], [50.0, 50.0, 50.0]]),
            "fc1": jnp.array([[0.1, 10.0], [0.1, 10.0], [0.0, 0.0]])}
    np.testing.assert_allclose(method.dormant_fraction(acts, valid, 0.0), 0.2)
    np.testing.assert_allclose(method.dormant_fraction(acts, valid, 0.1), 0.4)
    phi = jnp.array([[10.0, 0, 0], [0, 1.0, 0], [0, 0, 0.05], [7.0, 7.0, 7.0]])
    assert int(method.feature_srank(phi, jnp.array([True, True, True, False]))) == 2
    assert int(method.feature_srank(phi[:3], jnp.ones(3, bool), delta=0.001)) == 3
    # The host path of the training loop: the same ranks from the Gram matrix.
    gram = method.feature_gram(phi, jnp.array([True, True, True, False]))
    np.testing.assert_allclose(gram, np.diag([100.0, 1.0, 0.0025]), rtol=1e-6)
    assert method.srank_from_gram(gram) == 2
    assert method.srank_from_gram(np.stack([gram, gram]), delta=0.001).tolist() == [3, 3]
    np.testing.assert_allclose(method.tree_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}),
                               5.0)
    m = method.plasticity_metrics({"actor": acts}, valid, {"actor": {"w": jnp.ones(4)}})
    np.testing.assert_allclose(m["actor"]["param_norm"], 2.0)
    # The last hidden layer is fc1: features [[0.1, 10], [0.1, 10]] have rank 1.
    assert int(m["actor"]["feature_srank"]) == 1
    g = method.plasticity_metrics({"actor": acts}, valid, {"actor": {"w": jnp.ones(4)}}, "gram")
    assert "feature_srank" not in g["actor"] and method.srank_from_gram(
        g["actor"]["feature_gram"]) == 1
    with pytest.raises(ValueError, match=r"unknown srank 'qr'; valid choices: \('svd', 'gram'\)"):
        method.plasticity_metrics({"actor": acts}, valid, {"actor": {}}, "qr")


def test_shrink_perturb_by_hand():
    """0.4 * [1, -2] + 0.1 * [10, 0] = [1.4, -0.8]."""
    out = method.shrink_perturb({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([10.0, 0.0])},
                                0.4, 0.1)
    np.testing.assert_allclose(out["w"], [1.4, -0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="different structures"):
        method.shrink_perturb({"w": jnp.ones(2)}, {"v": jnp.ones(2)}, 0.4, 0.1)


@pytest.mark.slow
def test_shrink_perturb_through_the_loop(tmp_path):
    """Forked from a sac run: phase 1's evaluation sees the trained network (same sr row);
    phase 2 starts from 0.4 theta + 0.1 theta_fresh (norm ~0.41 |theta|), so its actor ends
    phase 2 with a norm far below vanilla SAC's, whose norm stays near phase 1's; the switch
    compiles once."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=300, learning_starts=100,
              eval_episodes=1)
    src = tmp_path / "sac"
    a = training.train_and_evaluate(tiny_config(method="sac", save_fork_point=True, **kw),
                                    str(src))
    b = training.train_and_evaluate(
        tiny_config(method="shrink_perturb", fork_from=str(src), **kw), str(tmp_path / "sp"))
    assert b["compilations"]["task_switch"] == 1 and b["compilations"]["update"] == 1
    np.testing.assert_array_equal(np.asarray(b["sr"])[:, 0], np.asarray(a["sr"])[:, 0])
    p1 = [s["actor"]["param_norm"] for s in a["phases"][0]["plasticity"]]
    # Phase 2 of S&P: its update norm is measured from the shrunk start, far from theta_1.
    sp_end = [s["actor"]["param_norm"] for s in b["phases"][1]["plasticity"]]
    sac_end = [s["actor"]["param_norm"] for s in a["phases"][1]["plasticity"]]
    assert all(x < 0.8 * y for x, y in zip(sp_end, sac_end, strict=True)), (sp_end, sac_end)
    assert all(abs(x - y) < 0.2 * y for x, y in zip(sac_end, p1, strict=True))


def test_redo_resets_a_dormant_unit_by_hand():
    """fc0 has 3 units, unit 1 dormant: its kernel column and bias come from the fresh init,
    its outgoing row of fc1 is zeroed, everything else is untouched, and Adam's moments are
    zeroed exactly where something was reset. A CReLU next layer (6 rows) loses rows 1 and
    4; a conv -> Dense flatten (2 x 2 positions x 3 channels) loses rows 1, 4, 7, 10."""
    k0, k1 = jnp.arange(6.0).reshape(2, 3) + 1, jnp.arange(6.0).reshape(3, 2) + 1
    params = {"params": {"fc0": {"kernel": k0, "bias": jnp.ones(3)},
                         "fc1": {"kernel": k1, "bias": jnp.ones(2)}}}
    fresh = jax.tree.map(lambda x: -x, params)
    dormant = {"fc0": jnp.array([False, True, False])}
    new, touched = method.redo(params, fresh, dormant)
    p = new["params"]
    np.testing.assert_array_equal(p["fc0"]["kernel"], [[1, -2, 3], [4, -5, 6]])
    np.testing.assert_array_equal(p["fc0"]["bias"], [1, -1, 1])
    np.testing.assert_array_equal(p["fc1"]["kernel"], [[1, 2], [0, 0], [5, 6]])
    np.testing.assert_array_equal(p["fc1"]["bias"], [1, 1])
    opt = optax.adam(1e-3)
    state = opt.init(params)
    state = jax.tree.map(lambda x: x + 1.0 if x.dtype == jnp.float32 else x, state)
    reset = method.reset_adam_moments(state, touched)
    mu = reset[0].mu["params"]
    np.testing.assert_array_equal(mu["fc1"]["kernel"], [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(mu["fc0"]["bias"], [1, 0, 1])
    assert int(reset[0].count) == int(state[0].count)
    # The next layer's rows of unit j are r % N == j: a CReLU pair, a flattened conv map.
    for rows, zeroed in ((6, [1, 4]), (12, [1, 4, 7, 10])):
        ps = {"params": {"fc0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
                         "out": {"kernel": jnp.ones((rows, 1)), "bias": jnp.ones(1)}}}
        out, _ = method.redo(ps, ps, dormant)
        got = np.flatnonzero(np.asarray(out["params"]["out"]["kernel"][:, 0]) == 0)
        np.testing.assert_array_equal(got, zeroed)
    # Dormant by ReDo's score: mean |a| = [0.05, 1, 2], s = [0.049, 0.98, 1.97].
    acts = {"fc0": jnp.array([[0.1, 1.0, 2.0], [0.0, -1.0, 2.0]])}
    d = method.dormant_units(acts, jnp.ones(2, bool), 0.1)
    np.testing.assert_array_equal(d["fc0"], [True, False, False])


@pytest.mark.slow
def test_redo_through_the_loop(tmp_path):
    """method='redo' with a short period: units are reset during each phase (counted per
    network in results.json), the reset function compiles once, and a fork from another
    method's run is refused (ReDo acts in phase 1)."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=400, learning_starts=100)
    r = training.train_and_evaluate(tiny_config(method="redo", redo_every=100, **kw),
                                    str(tmp_path / "redo"))
    assert r["compilations"]["redo"] == 1 and r["compilations"]["update"] == 1
    for phase in r["phases"]:
        resets = phase["redo_resets"]
        assert len(resets) == 2 and sum(s["actor"] + s["qf1"] for s in resets) > 0
    _fork_is_refused(tmp_path, "redo", kw)


def test_cbp_replaces_the_lowest_utility_mature_unit():
    """Layer fc0 (3 units) feeds fc1 (2 units) then the head. Utility = mean |h| * sum
    |w_out|: mean |h| = [1, 2, 4], fc1's rows sum to [3, 1, 1], so [3, 2, 4]; with all units
    mature and rho * 3 units * 4 steps = 1.2 replacements owed, exactly unit 1 (utility 2)
    is replaced: fresh incoming weights, zero outgoing row, age and utility 0, 0.2 carried."""
    params = {"params": {"fc0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
                         "fc1": {"kernel": jnp.array([[1.0, -2.0], [0.5, 0.5], [1.0, 0.0]]),
                                 "bias": jnp.zeros(2)},
                         "head": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)}}}
    fresh = jax.tree.map(lambda x: x + 7.0, params)
    acts = {"fc0": jnp.array([[1.0, -2.0, 4.0], [1.0, 2.0, 4.0]]),
            "fc1": jnp.array([[1.0, 1.0], [1.0, 1.0]])}
    util = method.contribution_utility(acts, jnp.ones(2, bool), params)
    np.testing.assert_allclose(util["fc0"], [3.0, 2.0, 4.0])
    state = method.cbp_init({"fc0": 3, "fc1": 2})
    state = state._replace(age={"fc0": jnp.array([50, 50, 50]), "fc1": jnp.array([0, 0])})
    new, touched, state, replaced = method.cbp_step(params, fresh, state, util, steps=4,
                                                    decay=0.99, rate=0.1, maturity=20)
    assert replaced["fc0"].tolist() == [False, True, False]
    assert replaced["fc1"].tolist() == [False, False]  # not mature (age 4 <= 20)
    k0 = new["params"]["fc0"]["kernel"]
    np.testing.assert_array_equal(k0[:, 1], [8.0, 8.0])
    np.testing.assert_array_equal(k0[:, 0], [1.0, 1.0])
    np.testing.assert_array_equal(new["params"]["fc1"]["kernel"][1], [0.0, 0.0])
    np.testing.assert_array_equal(new["params"]["fc1"]["kernel"][0], [1.0, -2.0])
    assert bool(touched["params"]["fc1"]["kernel"][1].all())
    assert state.age["fc0"].tolist() == [54, 0, 54] and float(state.util["fc0"][1]) == 0.0
    np.testing.assert_allclose(state.owed["fc0"], 0.2, atol=1e-6)


@pytest.mark.slow
def test_cbp_through_the_loop(tmp_path):
    """method='cbp' with a high replacement rate: units are replaced in each phase (counted
    per network in results.json), CBP's chunk step compiles once, and a fork from another
    method's run is refused (CBP acts in phase 1)."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=400, learning_starts=100)
    r = training.train_and_evaluate(
        tiny_config(method="cbp", cbp_rate=0.01, cbp_maturity=10, **kw), str(tmp_path / "cbp"))
    assert r["compilations"]["cbp"] == 1 and r["compilations"]["update"] == 1
    for phase in r["phases"]:
        assert phase["redo_resets"] is None
        replaced = phase["cbp_replacements"]
        assert len(replaced) == 2 and all(s["actor"] > 0 and s["qf1"] > 0 for s in replaced)
    _fork_is_refused(tmp_path, "cbp", kw)


def test_npc_taylor_importance_equals_activation_times_its_gradient():
    """The criterion from theta * grad equals |mean over the batch of a * dL/da| taken by
    autodiff through a perturbation of the activations (ReLU and CReLU layers), divided by
    the layer's root mean square; importance's running mean and the scales by hand."""
    from nbsp_jax.networks.layers import CReLUDense, ReLUDense

    x = jax.random.normal(jax.random.key(0), (16, 3))
    for layer, width in ((ReLUDense, 4), (CReLUDense, 4)):
        def net(params, delta=None, layer=layer):
            a = layer(4).apply({"params": params["params"]["fc0"]}, x)
            a = a if delta is None else a + delta
            out = a @ params["params"]["head"]["kernel"]
            return jnp.mean(jnp.square(out - 1.0)), a

        k1, k2 = jax.random.split(jax.random.key(width + (layer is CReLUDense)))
        fc0 = layer(4).init(k1, x)["params"]
        head = jax.random.normal(k2, (8 if layer is CReLUDense else 4, 1))
        params = {"params": {"fc0": fc0, "head": {"kernel": head}}}
        grads = jax.grad(lambda p: net(p)[0])(params)
        _, a = net(params)
        da = jax.grad(lambda d, p=params: net(p, d)[0])(jnp.zeros_like(a))
        per_feature = (a * da).sum(axis=0)  # = batch mean of a * dL/da (the loss is a mean)
        if layer is CReLUDense:  # a unit's two features, relu(z) and relu(-z)
            per_feature = per_feature[:4] + per_feature[4:]
        want = jnp.abs(per_feature) / jnp.sqrt(jnp.mean(per_feature**2))
        got = method.taylor_importance(params, grads)
        np.testing.assert_allclose(got["params"]["fc0"]["kernel"], want, rtol=1e-4)
        np.testing.assert_array_equal(got["params"]["fc0"]["bias"], got["params"]["fc0"]["kernel"])

    # The transform passes updates through and keeps a running mean; scales by hand.
    params = {"w": jnp.array([[1.0, 2.0]]), "b": jnp.zeros(2)}
    grads = {"w": jnp.array([[3.0, 1.0]]), "b": jnp.ones(2)}  # theta * g = [3, 2]
    t = method.npc_importance(decay=0.5)
    state = t.init(params)
    out, state = t.update(grads, state, params)
    assert out is grads and int(state.count) == 1
    c = np.array([3.0, 2.0]) / np.sqrt((9 + 4) / 2)  # [1.177, 0.784]
    np.testing.assert_allclose(state.importance["w"], 0.5 * c, rtol=1e-6)
    # Bias-corrected mean after one step is c itself; c_max = 1.5: 1 - c / 1.5.
    scales = method.npc_scales(state, decay=0.5, c_max=1.5)
    np.testing.assert_allclose(scales["w"], 1.0 - c / 1.5, rtol=1e-5)
    np.testing.assert_allclose(method.npc_scales(state, 0.5, 1.0)["w"], [0.0, 1.0 - c[1]],
                               rtol=1e-5)


@pytest.mark.slow
def test_npc_through_the_loop(tmp_path):
    """method='npc': after phase 1 every hidden neuron of actor and critics has a
    learning-rate factor in [0, 1] from its importance (not all 1; output heads keep 1),
    phase 2's factors never exceed phase 1's (policy min), no recompilation, and a fork from
    another method's run is refused (NPC's importance accumulates in phase 1)."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=300, learning_starts=100)
    c = tiny_config(method="npc", npc_c_max=1.5, **kw)
    r = training.train_and_evaluate(c, str(tmp_path / "npc"))
    assert r["compilations"]["end_task"] == 1 and r["compilations"]["update"] == 1
    state = r["state"]
    actor = method.get_masks(state.opt.actor)["params"]
    for layer in ("fc0", "fc1"):
        m = np.asarray(actor[layer]["kernel"])  # [S, N]
        assert m.shape == (2, 32) and (m >= 0).all() and (m <= 1).all() and (m < 1).any()
        np.testing.assert_array_equal(m, actor[layer]["bias"])
    assert (np.asarray(actor["mean"]["kernel"]) == 1).all()
    q = method.get_masks(state.opt.q)["qf1"]["params"]
    assert (np.asarray(q["fc0"]["kernel"]) < 1).any()
    assert (np.asarray(q["out"]["kernel"]) == 1).all()
    # The neurons record holds the installed factors; phase 2's are the smaller of both.
    rec = [np.load(tmp_path / "npc" / "neurons" / f"phase0{i}_{t}.npz")
           for i, t in ((1, "reach"), (2, "window-open"))]
    np.testing.assert_array_equal(rec[1]["actor/fc0/mask"], actor["fc0"]["kernel"])
    assert (rec[1]["qf2/fc1/mask"] <= rec[0]["qf2/fc1/mask"]).all()
    assert (rec[1]["actor/fc1/mask"] < rec[0]["actor/fc1/mask"]).any()
    _fork_is_refused(tmp_path, "npc", kw)


def test_plasticity_injection_output_unchanged_at_injection_and_only_the_new_part_trains():
    """Injected(QNetwork): the output equals the base network's until the new part trains;
    masks by hand; under chain(adam, masked_scale) with injection 0, base and init0 stay
    bit-identical while new0 moves and the output changes."""
    from nbsp_jax.networks import Injected, QNetwork

    net = Injected(QNetwork((8,)), 2)
    obs, act = jax.random.normal(jax.random.key(0), (16, 3)), jnp.ones((16, 2))
    params = net.init(jax.random.key(1), obs, act)
    p = params["params"]
    assert sorted(p) == ["base", "init0", "init1", "new0", "new1"]
    base_only = QNetwork((8,)).apply({"params": p["base"]}, obs, act)
    np.testing.assert_array_equal(net.apply(params, obs, act), base_only)
    m = method.injection_masks(params, jnp.int32(0))["params"]
    assert float(m["base"]["fc0"]["kernel"].sum()) == 0
    assert bool((m["new0"]["out"]["bias"] == 1).all())
    assert float(m["new1"]["fc0"]["bias"].sum()) == 0
    assert float(m["init0"]["fc0"]["bias"].sum()) == 0
    m = method.injection_masks({"qf1": params}, jnp.int32(-1))["qf1"]["params"]
    assert bool((m["base"]["fc0"]["kernel"] == 1).all())
    assert float(m["new0"]["out"]["kernel"].sum()) == 0
    with pytest.raises(ValueError, match="no 'base'"):
        method.injection_masks({"fc0": {"kernel": jnp.ones((2, 2))}}, jnp.int32(0))

    opt = optax.chain(optax.adam(1e-2), method.masked_scale())
    state = method.set_masks(opt.init(params), method.injection_masks(params, jnp.int32(0)))
    loss = lambda q: jnp.mean((net.apply(q, obs, act) - 3.0) ** 2)
    new = params
    for _ in range(5):
        updates, state = opt.update(jax.grad(loss)(new), state, new)
        new = optax.apply_updates(new, updates)
    for part in ("base", "init0", "new1", "init1"):
        for a, b in zip(jax.tree.leaves(new["params"][part]), jax.tree.leaves(p[part]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(new["params"]["new0"]["out"]["kernel"], p["new0"]["out"]["kernel"])
    assert loss(new) < loss(params)


def test_a_plasticity_injection_fork_starts_from_the_plain_networks():
    """graft_state puts a plain SAC state (after one Adam step, so its moments are not zero)
    into a plasticity-injection state: the base holds the source's parameters and Adam
    moments, new0 and init0 keep the template's (equal, so their term is exactly zero), the
    masks still train the base, and the actor's and critics' outputs are the source's exactly."""
    from nbsp_jax.networks import Injected
    from nbsp_jax.training.fork import graft_state, into_base

    adam = optax.adam(1e-3)
    plain = sac.make_sac(3, 2, hidden=(8, 8), actor_opt=adam, q_opt=adam)
    chain = optax.chain(optax.adam(1e-3), method.masked_scale())
    inj = sac.make_sac(3, 2, hidden=(8, 8), actor_opt=chain, q_opt=chain)
    inj = inj._replace(actor=Injected(inj.actor, 1, metaworld_domain.clip_log_std),
                       critic=Injected(inj.critic, 1))
    src = sac.init_state(plain, jax.random.key(0))
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), src.params.actor)
    src = src._replace(opt=src.opt._replace(actor=adam.update(grads, src.opt.actor)[1]))
    target = sac.init_state(inj, jax.random.key(1))
    p = target.params
    target = target._replace(opt=target.opt._replace(
        actor=method.set_masks(target.opt.actor, method.injection_masks(p.actor, -1)),
        q=method.set_masks(target.opt.q, method.injection_masks(p.q, -1))))

    g = graft_state(src, target)
    obs = jax.random.normal(jax.random.key(2), (16, 3))
    act = jax.random.uniform(jax.random.key(3), (16, 2), minval=-1, maxval=1)
    for x, y in zip(inj.actor.apply(g.params.actor, obs),
                    plain.actor.apply(src.params.actor, obs), strict=True):
        np.testing.assert_array_equal(x, y)
    for net in ("qf1", "qf2"):
        for tree in ("q", "q_target"):
            np.testing.assert_array_equal(
                inj.critic.apply(getattr(g.params, tree)[net], obs, act),
                plain.critic.apply(getattr(src.params, tree)[net], obs, act))
    mu, mu_src = g.opt.actor[0][0].mu["params"], src.opt.actor[0].mu["params"]
    np.testing.assert_array_equal(mu["base"]["fc0"]["kernel"], mu_src["fc0"]["kernel"])
    assert float(np.abs(mu_src["fc0"]["kernel"]).min()) > 0
    assert float(np.abs(mu["new0"]["fc0"]["kernel"]).max()) == 0
    np.testing.assert_array_equal(g.params.actor["params"]["new0"]["fc0"]["kernel"],
                                  p.actor["params"]["init0"]["fc0"]["kernel"])
    masks = g.opt.actor[1].masks["params"]
    assert bool((masks["base"]["fc0"]["kernel"] == 1).all())
    assert float(masks["new0"]["fc0"]["kernel"].sum()) == 0
    with pytest.raises(ValueError, match="differ in more than the method's own states"):
        into_base({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


@pytest.mark.slow
def test_plasticity_injection_through_the_loop(tmp_path):
    """method='pi': phase 1 trains only the base networks (new0 still equals its frozen copy
    at phase 1's end), phase 2 only new0 (the base is bit-identical to phase 1's end), the
    switch compiles once. Forked from a sac run's end of phase 1, its phase 1 evaluates as the
    source's (the same function), its base is the source's trained network and stays so
    through phase 2, and new0 trains."""
    kw = dict(tasks=("reach", "window-open"), steps_per_task=300, learning_starts=100)
    r = training.train_and_evaluate(tiny_config(method="pi", save_score_record=True, **kw),
                                    str(tmp_path / "pi"))
    assert r["compilations"]["task_switch"] == 1 and r["compilations"]["update"] == 1
    rec = np.load(tmp_path / "pi" / "neurons" / "phase01_reach_record.npz")
    key = "params/actor/params/{}/fc0/kernel"
    np.testing.assert_array_equal(rec[key.format("new0")], rec[key.format("init0")])
    end = r["state"].params.actor["params"]
    np.testing.assert_array_equal(end["base"]["fc0"]["kernel"], rec[key.format("base")])
    assert not np.allclose(end["new0"]["fc0"]["kernel"], end["init0"]["fc0"]["kernel"])
    q = r["state"].params.q["qf2"]["params"]
    assert not np.allclose(q["new0"]["out"]["kernel"], q["init0"]["out"]["kernel"])

    src = tmp_path / "sac"
    a = training.train_and_evaluate(
        tiny_config(method="sac", save_fork_point=True, save_score_record=True, **kw), str(src))
    b = training.train_and_evaluate(tiny_config(method="pi", fork_from=str(src), **kw),
                                    str(tmp_path / "pi_fork"))
    # task_switch compiles twice: init_run calls it on the fresh (uncommitted) template to
    # install the base masks, and the switch calls it on the restored, committed arrays.
    assert b["compilations"]["task_switch"] == 2 and b["compilations"]["update"] == 1
    np.testing.assert_array_equal(np.asarray(b["sr"])[:, 0], np.asarray(a["sr"])[:, 0])
    src_rec = np.load(src / "neurons" / "phase01_reach_record.npz")
    end = b["state"].params.actor["params"]
    for layer in ("fc0", "fc1", "mean", "log_std"):
        np.testing.assert_array_equal(end["base"][layer]["kernel"],
                                      src_rec[f"params/actor/params/{layer}/kernel"])
    assert not np.allclose(end["new0"]["fc0"]["kernel"], end["init0"]["fc0"]["kernel"])


@pytest.mark.slow
def test_cbp_resumed_mid_phase_keeps_its_state_and_counts(tmp_path, monkeypatch):
    """A CBP run killed mid-phase (after a checkpoint) and resumed replaces as many units as
    an uninterrupted run: replacements accrue at cbp_rate * mature units per step, so the
    count depends on the restored ages and owed fractions, not on the data, and the phase's
    count must include the replacements made before the kill. Nothing compiles twice in the
    resumed process, whose restored arrays meet phase 2's fresh buffer."""
    from nbsp_jax.training.phase import PhaseRun

    kw = dict(tasks=("reach", "window-open"), steps_per_task=400, learning_starts=100,
              method="cbp", cbp_rate=0.01, cbp_maturity=10, checkpoint_every_s=1e-6)
    whole = training.train_and_evaluate(tiny_config(**kw), str(tmp_path / "whole"))
    original, calls = PhaseRun.checkpoint, []

    def killed(self, *a, **k):
        original(self, *a, **k)
        calls.append(self.steps)
        if self.phase == 0 and len(calls) == 4:
            raise RuntimeError("killed")

    monkeypatch.setattr(PhaseRun, "checkpoint", killed)
    with pytest.raises(RuntimeError, match="killed"):
        training.train_and_evaluate(tiny_config(**kw), str(tmp_path / "cut"))
    monkeypatch.setattr(PhaseRun, "checkpoint", original)
    assert 100 < calls[-1] < 400  # killed mid-phase 1, after its updates began
    resumed = training.train_and_evaluate(tiny_config(**kw), str(tmp_path / "cut"))
    for p_whole, p_resumed in zip(whole["phases"], resumed["phases"], strict=True):
        assert p_resumed["cbp_replacements"] == p_whole["cbp_replacements"]
    assert all(s["actor"] > 0 for s in whole["phases"][0]["cbp_replacements"])
    assert max(resumed["compilations"].values()) == 1, resumed["compilations"]
