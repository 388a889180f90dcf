"""Discrete SAC (CleanRL sac_atari semantics) and its Atari networks.

Compilation dominates the run time on CPU, so the tests share a few module-level jitted
functions: one agent, one init, one "everything" function and one vmapped update_many.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nbsp_jax import networks as networks_atari
from nbsp_jax.agents import sac_discrete
from nbsp_jax.buffers import transitions as replay
from nbsp_jax.buffers.transitions import ReplayBuffer, Transition
from nbsp_jax.method import masked_scale, masks_from_layers, set_masks
from nbsp_jax.networks import record

# A small trunk on 12x12 frames: 12 -(4/2)-> 5 -(3/1)-> 3 -(2/1)-> 2, flatten 2*2*2 = 8.
TINY_CONVS = ((4, 4, 2), (3, 3, 1), (2, 2, 1))
OBS = (4, 12, 12)
LR = 1e-3
AGENT = sac_discrete.make_sac_discrete(
    OBS, 3, hidden=(5, 4), convs=TINY_CONVS, batch_size=3, gamma=0.9, policy_lr=LR, q_lr=LR,
    # NBSP-style actor optimizer: masks after Adam (all ones unless set).
    actor_opt=optax.chain(optax.adam(LR, eps=1e-4), masked_scale()),
)
AGENT_SUM = AGENT._replace(action_reduction="sum")
INIT = jax.jit(lambda key: sac_discrete.init_state(AGENT, key))


def _obs(key, n):
    return jax.random.randint(key, (n, *OBS), 0, 256).astype(jnp.uint8)


def _batch(key, n=3):
    k = jax.random.split(key, 2)
    return Transition(
        obs=_obs(k[0], n),
        action=jnp.arange(n, dtype=jnp.int32) % 3,
        reward=jnp.linspace(-1.0, 2.0, n),
        next_obs=_obs(k[1], n),
        # row 0 terminated; row 1 truncated (stored as 0: bootstraps); the rest ordinary.
        terminated=jnp.zeros(n).at[0].set(1.0),
    )


@jax.jit
def _parts(state, batch, key):
    """Every quantity the tests look at, from one compiled function."""
    sd, p = sac_discrete, state.params
    probs, logp = sd.policy(AGENT, p.actor, batch.obs)
    new, info = sd.update(AGENT, state, batch)
    nets = lambda q, o: (AGENT.critic.apply(q["qf1"], o), AGENT.critic.apply(q["qf2"], o))
    return {
        "critic": sd.critic_loss(AGENT, p.q, p.q_target, p.actor, p.log_alpha, batch),
        "actor_loss": sd.actor_loss(AGENT, p.actor, p.q, p.log_alpha, batch.obs)[0],
        "alpha_loss": sd.alpha_loss(AGENT, p.log_alpha, probs, logp),
        "actor_loss_sum": sd.actor_loss(AGENT_SUM, p.actor, p.q, p.log_alpha, batch.obs)[0],
        "alpha_loss_sum": sd.alpha_loss(AGENT_SUM, p.log_alpha, probs, logp),
        "new": new,
        "info": info,
        "logits": AGENT.actor.apply(p.actor, batch.obs),
        "logits_next": AGENT.actor.apply(p.actor, batch.next_obs),
        "q": nets(p.q, batch.obs),
        "q_target_next": nets(p.q_target, batch.next_obs),
        "q_after_critic": nets(new.params.q, batch.obs),
        "samples": sd.sample_action(AGENT, p.actor, jnp.repeat(batch.obs, 1000, axis=0), key),
        "greedy": sd.greedy_action(AGENT, p.actor, batch.obs),
    }


def _leaves_equal(a, b):
    return all(np.array_equal(x, y)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---------------------------------------------------------------- networks


def _np_forward(variables, obs, convs):
    """Explicit numpy forward of a trunk + output (loops over conv output positions)."""
    p = jax.tree.map(np.asarray, variables["params"])
    x = np.asarray(obs, np.float64).transpose(0, 2, 3, 1) / 255.0
    for i, (_, k, s) in enumerate(convs):
        w, b = p[f"conv{i}"]["kernel"], p[f"conv{i}"]["bias"]
        n, h, wd, _ = x.shape
        ho, wo = (h - k) // s + 1, (wd - k) // s + 1
        y = np.zeros((n, ho, wo, w.shape[-1]))
        for r in range(ho):
            for c in range(wo):
                patch = x[:, r * s : r * s + k, c * s : c * s + k, :]
                y[:, r, c] = np.einsum("nhwc,hwcf->nf", patch, w) + b
        x = np.maximum(y, 0.0)
    x = x.reshape(x.shape[0], -1)
    j = 0
    while f"fc{j}" in p:
        x = np.maximum(x @ p[f"fc{j}"]["kernel"] + p[f"fc{j}"]["bias"], 0.0)
        j += 1
    return x @ p["out"]["kernel"] + p["out"]["bias"]


def test_networks_match_numpy_forward_and_trunks_are_separate():
    state = INIT(jax.random.key(0))
    batch = _batch(jax.random.key(1))
    out = _parts(state, batch, jax.random.key(2))
    p = state.params
    for got, variables in [(out["logits"], p.actor), (out["q"][0], p.q["qf1"]),
                           (out["q"][1], p.q["qf2"])]:
        assert got.shape == (3, 3)
        np.testing.assert_allclose(got, _np_forward(variables, batch.obs, TINY_CONVS),
                                   rtol=1e-4, atol=1e-5)
    names = ["conv0", "conv1", "conv2", "fc0", "fc1", "out"]
    for v in (p.actor, p.q["qf1"], p.q["qf2"]):
        assert sorted(v["params"]) == names
    # Three separate trunks: different initial weights; targets are copies, not aliases.
    conv0 = lambda v: np.asarray(v["params"]["conv0"]["kernel"])
    assert not np.allclose(conv0(p.actor), conv0(p.q["qf1"]))
    assert not np.allclose(conv0(p.q["qf1"]), conv0(p.q["qf2"]))
    assert _leaves_equal(p.q, p.q_target)
    for x, y in zip(jax.tree.leaves(p.q), jax.tree.leaves(p.q_target), strict=True):
        assert x.unsafe_buffer_pointer() != y.unsafe_buffer_pointer()


def _random_variables(module, obs):
    """Parameters of the right shapes without compiling an init (normal, std 0.05)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), obs)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype), shapes)


def test_im2col_equals_xla_conv_on_nature_trunk():
    # 36x36 is the smallest frame the Nature trunk takes: 36 -> 8 -> 3 -> 1.
    kw = dict(num_actions=18, hidden=(16, 8))
    xla = networks_atari.DiscreteQ(**kw)
    im2col = networks_atari.DiscreteQ(**kw, conv_impl="im2col")
    obs = jax.random.randint(jax.random.key(1), (2, 4, 36, 36), 0, 256).astype(jnp.uint8)
    shapes = jax.eval_shape(xla.init, jax.random.key(0), obs)
    assert jax.tree.structure(shapes) == jax.tree.structure(
        jax.eval_shape(im2col.init, jax.random.key(0), obs))
    assert shapes["params"]["conv0"]["kernel"].shape == (8, 8, 4, 32)
    assert shapes["params"]["conv1"]["kernel"].shape == (4, 4, 32, 64)
    assert shapes["params"]["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert shapes["params"]["out"]["kernel"].shape == (8, 18)
    # 84x84 frames: flatten 7 * 7 * 64 = 3136 into fc0.
    big = jax.eval_shape(xla.init, jax.random.key(0), jnp.zeros((1, 4, 84, 84), jnp.uint8))
    assert big["params"]["fc0"]["kernel"].shape == (3136, 16)

    v = _random_variables(xla, obs)
    a, b = jax.jit(lambda v, o: (xla.apply(v, o), im2col.apply(v, o)))(v, obs)
    assert a.shape == (2, 18)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Patch order matches the Flax kernel layout (kh, kw, in).
    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    patches = networks_atari.extract_patches(jnp.asarray(x), 3, 2)
    assert patches.shape == (2, 2, 2, 27)
    np.testing.assert_array_equal(patches[1, 1, 0], x[1, 2:5, 0:3, :].reshape(-1))


def test_kaiming_normal_init_as_cleanrl():
    assert networks_atari.DiscreteQ(18).kernel_init is networks_atari.KAIMING_NORMAL
    assert networks_atari.DiscreteActor(18).kernel_init is networks_atari.KAIMING_NORMAL
    w = networks_atari.KAIMING_NORMAL(jax.random.key(0), (4, 4, 32, 64))
    assert abs(float(w.std()) / math.sqrt(2.0 / (4 * 4 * 32)) - 1.0) < 0.05


def test_record_returns_channel_means_and_hidden_units_not_output():
    net = networks_atari.DiscreteActor(num_actions=18, hidden=(16, 8))
    obs = jax.random.randint(jax.random.key(1), (5, 4, 36, 36), 0, 256).astype(jnp.uint8)
    v = _random_variables(net, obs)
    logits, acts = jax.jit(lambda v, o: record(net, v, o))(v, obs)
    assert logits.shape == (5, 18)
    assert {k: a.shape for k, a in acts.items()} == {
        "conv0": (5, 32), "conv1": (5, 64), "conv2": (5, 64), "fc0": (5, 16), "fc1": (5, 8)}
    assert all(float(a.min()) >= 0.0 for a in acts.values())  # post-ReLU
    # conv0's entry is the channel mean of its post-ReLU output (numpy, loops).
    x = np.asarray(obs, np.float64).transpose(0, 2, 3, 1) / 255.0
    w, b = (np.asarray(v["params"]["conv0"][n]) for n in ("kernel", "bias"))
    pre = np.stack([np.stack([np.einsum("nhwc,hwcf->nf", x[:, 4 * r:4 * r + 8, 4 * c:4 * c + 8], w)
                              for c in range(8)], 1) for r in range(8)], 1) + b
    np.testing.assert_allclose(acts["conv0"], np.maximum(pre, 0).mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- losses, hand-worked


def test_target_entropy_is_0_89_log_num_actions():
    agent = sac_discrete.make_sac_discrete((4, 84, 84), 18)
    assert agent.target_entropy == pytest.approx(0.89 * math.log(18))
    assert agent.target_entropy == pytest.approx(2.5724308645)
    assert (agent.batch_size, agent.gamma, agent.target_every) == (64, 0.99, 2000)
    assert agent.action_reduction == "mean"
    assert sac_discrete.target_entropy_for(3) == pytest.approx(0.89 * math.log(3))


def _constant_nets(state, actor_bias, q1, q2, q1t, q2t, log_alpha):
    """All weights zero; each network outputs its 'out' bias for every state."""

    def with_bias(v, b):
        v = jax.tree.map(jnp.zeros_like, v)
        v["params"]["out"]["bias"] = jnp.asarray(b, jnp.float32)
        return v

    p = state.params
    return state._replace(params=p._replace(
        actor=with_bias(p.actor, actor_bias),
        q={"qf1": with_bias(p.q["qf1"], q1), "qf2": with_bias(p.q["qf2"], q2)},
        q_target={"qf1": with_bias(p.q["qf1"], q1t), "qf2": with_bias(p.q["qf2"], q2t)},
        log_alpha=jnp.asarray(log_alpha, jnp.float32),
    ))


def test_losses_by_hand():
    """pi = (.5, .3, .2), alpha = .5, gamma = .9; Q1 = (1, 2, 3), Q2 = (2, 1, 4),
    Q1' = (1, 0, 2), Q2' = (.5, 1, 3) in every state."""
    state = _constant_nets(INIT(jax.random.key(0)), np.log([0.5, 0.3, 0.2]), [1, 2, 3],
                           [2, 1, 4], [1, 0, 2], [0.5, 1, 3], np.log(0.5))
    k = jax.random.split(jax.random.key(1), 2)
    batch = Transition(obs=_obs(k[0], 3), action=jnp.array([0, 2, 1]),
                       reward=jnp.array([1.0, 2.0, -1.0]), next_obs=_obs(k[1], 3),
                       terminated=jnp.array([1.0, 0.0, 0.0]))  # row 1: truncation, bootstraps
    out = _parts(state, batch, jax.random.key(2))

    # soft V(s') = sum_a pi (min(Q1', Q2') - alpha log pi)
    #            = .5 (.5 - .5 log .5) + .3 (0 - .5 log .3) + .2 (2 - .5 log .2) = 1.1648265
    soft = 0.5 * (0.5 - 0.5 * np.log(0.5)) + 0.3 * (0 - 0.5 * np.log(0.3)) \
        + 0.2 * (2 - 0.5 * np.log(0.2))
    assert soft == pytest.approx(1.1648265070)
    y = np.array([1.0, 2.0 + 0.9 * soft, -1.0 + 0.9 * soft])  # terminated row: reward only
    np.testing.assert_allclose(y, [1.0, 3.0483439, 0.0483439], rtol=1e-6)
    # Q(s, a) on the taken actions (0, 2, 1): Q1 -> (1, 3, 2), Q2 -> (2, 4, 1).
    l1 = np.mean((np.array([1, 3, 2]) - y) ** 2)
    l2 = np.mean((np.array([2, 4, 1]) - y) ** 2)
    assert (l1, l2) == (pytest.approx(1.2704329), pytest.approx(0.9370996))
    loss, info = out["critic"]
    np.testing.assert_allclose([info["qf1_loss"], info["qf2_loss"], loss], [l1, l2, l1 + l2],
                               rtol=1e-5)
    np.testing.assert_allclose([out["info"]["qf1_loss"], out["info"]["qf2_loss"]], [l1, l2],
                               rtol=1e-5)
    np.testing.assert_allclose(info["qf1_values"], 2.0, rtol=1e-6)

    # Actor: sum_a pi (alpha log pi - min(Q1, Q2)), min Q = (1, 1, 3): -1.9148265 per state;
    # CleanRL's .mean() over [B, A] divides by |A| = 3.
    per_state = sum(pi * (0.5 * np.log(pi) - m)
                    for pi, m in zip([.5, .3, .2], [1, 1, 3], strict=True))
    assert per_state == pytest.approx(-1.9148265)
    np.testing.assert_allclose(out["actor_loss"], per_state / 3, rtol=1e-5)
    np.testing.assert_allclose(out["actor_loss_sum"], per_state, rtol=1e-5)

    # Temperature: sum_a pi (-alpha (log pi + H)), H = .89 log 3 = .9777649: 0.0259440 per state.
    h = 0.89 * np.log(3)
    t_per_state = sum(pi * (-0.5 * (np.log(pi) + h)) for pi in [.5, .3, .2])
    assert t_per_state == pytest.approx(0.0259440386)
    np.testing.assert_allclose(out["alpha_loss"], t_per_state / 3, rtol=1e-5)
    np.testing.assert_allclose(out["alpha_loss_sum"], t_per_state, rtol=1e-5)
    np.testing.assert_allclose(out["info"]["alpha_loss"], t_per_state / 3, rtol=1e-5)

    # The temperature step uses pi before the actor step: d loss / d log_alpha = loss itself
    # (d exp(x)/dx = exp(x)); Adam's first step is -lr * g / (|g| + eps), CleanRL's eps = 1e-4.
    # Entropy 1.0297 is above the target 0.9778, so alpha decreases.
    g = t_per_state / 3
    np.testing.assert_allclose(out["new"].params.log_alpha,
                               np.log(0.5) - LR * g / (abs(g) + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(out["info"]["entropy"],
                               -(np.log([.5, .3, .2]) * [.5, .3, .2]).sum(), rtol=1e-5)
    # Sampling follows pi; greedy takes the argmax.
    freq = np.bincount(np.asarray(out["samples"]), minlength=3) / out["samples"].shape[0]
    assert out["samples"].dtype == jnp.int32 and out["samples"].shape == (3000,)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.03)
    assert out["greedy"].dtype == jnp.int32 and out["greedy"].tolist() == [0, 0, 0]


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_update_matches_numpy_on_random_networks():
    state = INIT(jax.random.key(0))
    p = state.params
    # Targets that differ from the online critics, and alpha != 1.
    state = state._replace(params=p._replace(
        q_target=jax.tree.map(lambda x: x * 0.9, p.q_target), log_alpha=jnp.float32(-0.3)))
    batch = _batch(jax.random.key(1))
    out = _parts(state, batch, jax.random.key(2))
    # CleanRL's formulas in numpy, from the networks' outputs.
    alpha = np.exp(-0.3)
    logp_next = _log_softmax(out["logits_next"])
    min_next = np.minimum(*(np.asarray(q, np.float64) for q in out["q_target_next"]))
    soft = (np.exp(logp_next) * (min_next - alpha * logp_next)).sum(-1)
    y = np.asarray(batch.reward) + 0.9 * (1 - np.asarray(batch.terminated)) * soft
    a, rows = np.asarray(batch.action), np.arange(3)
    l1 = np.mean((np.asarray(out["q"][0])[rows, a] - y) ** 2)
    l2 = np.mean((np.asarray(out["q"][1])[rows, a] - y) ** 2)
    np.testing.assert_allclose([out["info"]["qf1_loss"], out["info"]["qf2_loss"]], [l1, l2],
                               rtol=1e-4)
    logp = _log_softmax(out["logits"])
    pi = np.exp(logp)
    # The actor step sees the freshly updated critics (CleanRL order).
    min_q = np.minimum(*(np.asarray(q, np.float64) for q in out["q_after_critic"]))
    np.testing.assert_allclose(out["info"]["actor_loss"], (pi * (alpha * logp - min_q)).mean(),
                               rtol=1e-4, atol=1e-6)
    temp = (pi * (-alpha * (logp + AGENT.target_entropy))).mean()
    np.testing.assert_allclose(out["info"]["alpha_loss"], temp, rtol=1e-4, atol=1e-7)
    # One update moves actor, critics and temperature, never the targets.
    new = out["new"].params
    assert _leaves_equal(new.q_target, state.params.q_target)
    assert not _leaves_equal(new.q, state.params.q)
    assert not _leaves_equal(new.actor, state.params.actor)
    assert float(new.log_alpha) != -0.3


# ---------------------------------------------------------------- update_many


def _buffer():
    return ReplayBuffer(_batch(jax.random.key(3), 16), jnp.int32(0), jnp.int32(16))


# Two seeds in lockstep, three gradient steps per call, a hard target copy every 4 steps.
STEP = jax.jit(jax.vmap(
    lambda s, buf, step0: sac_discrete.update_many(
        AGENT, s, replay.sampler(buf, AGENT.batch_size), 3, step0, target_every=4),
    in_axes=(0, None, None)))


def _two_seeds():
    s = [INIT(jax.random.key(i)) for i in range(2)]
    return jax.tree.map(lambda a, b: jnp.stack([a, b]), *s)


def test_hard_target_copy_at_the_right_steps():
    state, buf = _two_seeds(), _buffer()
    # Calls cover gradient steps (1-based) 1-3, 4-6, 7-9, 10-12; copies after 4, 8 and 12:
    # none; after the first of the call; after the second; after the last.
    seen = []
    for step0 in (0, 3, 6, 9):
        new, _ = STEP(state, buf, jnp.int32(step0))
        for seed in range(2):
            pick = lambda t, seed=seed: jax.tree.map(lambda x: x[seed], t)
            target = pick(new.params.q_target)
            if _leaves_equal(target, pick(state.params.q_target)):
                seen.append("none")
            elif _leaves_equal(target, pick(new.params.q)):
                seen.append("last")
            else:
                seen.append("earlier")
        state = new
    assert seen == ["none"] * 2 + ["earlier"] * 4 + ["last"] * 2
    # hard_target_update copies into fresh buffers.
    one = sac_discrete.hard_target_update(INIT(jax.random.key(5)))
    assert _leaves_equal(one.params.q, one.params.q_target)
    for x, y in zip(jax.tree.leaves(one.params.q), jax.tree.leaves(one.params.q_target),
                    strict=True):
        assert x.unsafe_buffer_pointer() != y.unsafe_buffer_pointer()


def test_update_many_jit_vmap_two_seeds_with_masks():
    state = _two_seeds()
    # Freeze the actor's conv0 (an NBSP hard mask) on both seeds.
    single = jax.tree.map(lambda x: x[0], state.params.actor)
    masks = masks_from_layers(single, {"conv0": jnp.zeros(4)})
    masks = jax.tree.map(lambda m: jnp.stack([m, m]), masks)
    state = state._replace(opt=state.opt._replace(actor=set_masks(state.opt.actor, masks)))
    new, info = STEP(state, _buffer(), jnp.int32(0))
    assert set(info) >= {"qf1_loss", "qf2_loss", "actor_loss", "alpha_loss", "alpha", "entropy"}
    for v in info.values():
        assert v.shape == (2,) and bool(jnp.isfinite(v).all())
    assert float(jnp.abs(info["qf1_loss"][0] - info["qf1_loss"][1])) > 0  # seeds differ
    pa, pn = state.params.actor["params"], new.params.actor["params"]
    np.testing.assert_array_equal(pa["conv0"]["kernel"], pn["conv0"]["kernel"])
    np.testing.assert_array_equal(pa["conv0"]["bias"], pn["conv0"]["bias"])
    assert not np.array_equal(pa["fc0"]["kernel"], pn["fc0"]["kernel"])
    assert not _leaves_equal(new.params.q, state.params.q)
    assert new.params.log_alpha.shape == (2,)
