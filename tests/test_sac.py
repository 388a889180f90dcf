import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm

from nbsp_jax.agents import sac
from nbsp_jax.buffers import transitions as replay


def _agent(**kw):
    return sac.make_sac(obs_dim=3, action_dim=2, hidden=(16, 16), batch_size=8, **kw)


def test_log_prob_is_tanh_gaussian_density():
    agent = _agent()
    state = sac.init_state(agent, jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (5, 3))
    key = jax.random.key(2)
    action, logp = sac.sample_action(agent, state.params.actor, obs, key)
    mean, log_std = agent.actor.apply(state.params.actor, obs)
    x = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(action, np.tanh(x), rtol=1e-6)
    # Change of variables y = tanh(x): log p(y) = log N(x) - log(1 - tanh(x)^2).
    expected = (norm.logpdf(x, mean, jnp.exp(log_std)) - jnp.log(1 - jnp.tanh(x) ** 2)).sum(-1)
    np.testing.assert_allclose(logp, expected, rtol=1e-3, atol=1e-3)
    assert float(log_std.min()) >= -5.0 and float(log_std.max()) <= 2.0


def test_critic_target_bootstraps_truncation_not_termination():
    agent = _agent(gamma=0.9)
    state = sac.init_state(agent, jax.random.key(0))
    k = jax.random.split(jax.random.key(3), 4)
    batch = replay.Transition(
        obs=jax.random.normal(k[0], (4, 3)),
        action=jax.random.uniform(k[1], (4, 2), minval=-1, maxval=1),
        reward=jnp.array([1.0, 2.0, 3.0, 4.0]),
        next_obs=jax.random.normal(k[2], (4, 3)),
        terminated=jnp.array([1.0, 0.0, 1.0, 0.0]),
    )
    key = jax.random.key(9)
    _, info = sac.critic_update(agent, state, batch, jax.random.normal(key, (4, 2)))
    # Independent computation of CleanRL's target and loss (sample_action draws that noise).
    p = state.params
    a2, logp2 = sac.sample_action(agent, p.actor, batch.next_obs, key)
    q = lambda v, o, a: agent.critic.apply(v, o, a)
    min_next = jnp.minimum(q(p.q_target["qf1"], batch.next_obs, a2),
                           q(p.q_target["qf2"], batch.next_obs, a2)) - 1.0 * logp2  # alpha=1
    target = np.array(batch.reward) + 0.9 * np.array([0, 1, 0, 1]) * np.array(min_next)
    assert target[0] == 1.0 and target[2] == 3.0  # terminated rows: reward only
    q1 = q(p.q["qf1"], batch.obs, batch.action)
    np.testing.assert_allclose(info["qf1_loss"], np.mean((q1 - target) ** 2), rtol=1e-5)


def test_update_many_counts_and_polyak():
    agent = _agent(policy_frequency=2, tau=0.5)
    state = sac.init_state(agent, jax.random.key(0))
    buf = replay.init_buffer(64, 3, 2)
    rows = replay.Transition(jnp.ones((64, 3)), jnp.zeros((64, 2)), jnp.ones(64),
                             jnp.ones((64, 3)), jnp.zeros(64))
    buf = replay.add(buf, rows, jnp.ones(64, bool))
    sampler = replay.sampler(buf, agent.batch_size)
    new, info = sac.update_many(agent, state, sampler, 6, jnp.int32(0))
    count = lambda s: int(optax.tree_utils.tree_get(s, "count"))
    # 6 critic steps; CleanRL's delayed policy: 3 rounds x 2 actor (and alpha) steps.
    assert count(new.opt.q) == 6 and count(new.opt.actor) == 6 and count(new.opt.alpha) == 6
    assert set(info) >= {"qf1_loss", "qf2_loss", "actor_loss", "alpha", "alpha_loss"}
    # Targets moved towards, but are not equal to, the online critics.
    k = new.params.q["qf1"]["params"]["out"]["kernel"]
    kt = new.params.q_target["qf1"]["params"]["out"]["kernel"]
    k0 = state.params.q["qf1"]["params"]["out"]["kernel"]
    assert not np.allclose(kt, k) and not np.allclose(kt, k0)


def test_learns_one_step_bandit():
    """Reward -|a - 0.5|^2 in a terminal one-step task: the mean action must reach 0.5."""
    agent = sac.make_sac(obs_dim=3, action_dim=2, hidden=(32, 32), batch_size=64, q_lr=3e-3,
                         policy_lr=3e-3)
    state = sac.init_state(agent, jax.random.key(0))
    n = 4096
    k = jax.random.split(jax.random.key(1), 2)
    obs = jax.random.normal(k[0], (n, 3))
    act = jax.random.uniform(k[1], (n, 2), minval=-1, maxval=1)
    reward = -((act - 0.5) ** 2).sum(-1) * 10.0
    buf = replay.add(replay.init_buffer(n, 3, 2),
                     replay.Transition(obs, act, reward, obs, jnp.ones(n)), jnp.ones(n, bool))
    run = jax.jit(lambda s: sac.update_many(agent, s, replay.sampler(buf, agent.batch_size), 1000,
                                            jnp.int32(0)))
    state, info = run(state)
    a = sac.deterministic_action(agent, state.params.actor, obs[:256])
    err = float(jnp.abs(a - 0.5).mean())
    # The untrained policy's tanh(mean) is near 0 (error ~0.5); 1000 updates bring it to
    # 0.06-0.11 over seeds and random streams (measured), so the bar is set above that range.
    assert err < 0.15, f"mean |a - 0.5| = {err}"


def test_alpha_logp_fresh_samples_the_updated_actor_and_reuse_the_actor_step():
    """The temperature loss -exp(log_alpha) * mean(logp + target_entropy), by hand, with the
    log-probs CleanRL uses ('fresh': the updated actor, the second key) and SBX's ('reuse': the
    actor step's sample, before the update); log_alpha = 0.3 so that exp(log_alpha) != 1.
    ``sample_action`` with a key draws the same noise as the update is given."""
    obs = jax.random.normal(jax.random.key(2), (16, 3))
    k_pi, k_alpha = jax.random.split(jax.random.key(5))
    noise = jnp.stack([jax.random.normal(k, (16, 2)) for k in (k_pi, k_alpha)])
    losses = {}
    for mode in ("fresh", "reuse"):
        agent = sac.make_sac(obs_dim=3, action_dim=2, hidden=(8,), alpha_logp=mode)
        state = sac.init_state(agent, jax.random.key(0))
        state = state._replace(params=state.params._replace(log_alpha=jnp.float32(0.3)))
        new, info = sac.actor_alpha_update(agent, state, obs, noise)
        actor, k = (new.params.actor, k_alpha) if mode == "fresh" else (state.params.actor, k_pi)
        _, logp = sac.sample_action(agent, actor, obs, k)
        expected = -np.exp(0.3) * float((logp + agent.target_entropy).mean())
        np.testing.assert_allclose(float(info["alpha_loss"]), expected, rtol=1e-5)
        losses[mode] = float(info["alpha_loss"])
    assert abs(losses["fresh"] - losses["reuse"]) > 1e-4  # the two really differ
    with pytest.raises(ValueError, match="'fresh', 'reuse'"):
        sac.make_sac(obs_dim=3, action_dim=2, alpha_logp="stale")
