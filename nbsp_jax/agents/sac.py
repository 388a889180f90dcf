"""Continuous SAC with CleanRL ``sac_continuous_action.py`` semantics, as pure functions.

State is explicit (:class:`SACState`, nested NamedTuples) and every function is written for one
seed; the training loop ``jax.vmap``s them over the seed axis. What matches CleanRL:

- tanh-squashed Gaussian actor, log-std squashed into [-5, 2]; log-prob correction
  ``log(1 - tanh(x)^2 + 1e-6)`` (action scale 1: Meta-World actions lie in [-1, 1]);
- twin critics ``qf1, qf2`` trained by one Adam on the sum of their MSE losses against
  ``r + gamma * (1 - terminated) * (min target Q(s', a') - alpha * log pi(a'|s'))``;
- delayed policy updates: at every gradient step ``g`` with ``g % policy_frequency == 0``, right
  after that step's critic update, ``policy_frequency`` actor and temperature updates on the
  same batch (CleanRL's compensation loop, in CleanRL's order);
- autotuned temperature, ``log_alpha`` initialised at 0, target entropy ``-|A|``, Adam with the
  Q learning rate; Polyak averaging of the target critics after every critic update.

Where we differ: CleanRL alternates one env step and one update; here updates are fused into one
``lax.scan`` per chunk of env steps (:func:`make_update`), so the policy acting during a chunk
is at most one chunk old.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.agents.common import new_state
from nbsp_jax.networks import GaussianActor, QNetwork
from nbsp_jax.types import SACState, Sampler, Transition


class SAC(NamedTuple):
    """The static parts of an agent: networks, optimizers and hyper-parameters."""

    actor: GaussianActor
    critic: QNetwork
    actor_opt: optax.GradientTransformation
    q_opt: optax.GradientTransformation
    alpha_opt: optax.GradientTransformation
    obs_dim: int
    action_dim: int
    gamma: float
    tau: float
    policy_frequency: int
    batch_size: int
    target_entropy: float
    alpha_logp: str = "fresh"  # see make_sac


ALPHA_LOGP = ("fresh", "reuse")


def make_sac(
    obs_dim: int,
    action_dim: int,
    hidden: Sequence[int] = (256, 256),
    policy_lr: float = 3e-4,
    q_lr: float = 1e-3,
    gamma: float = 0.99,
    tau: float = 0.005,
    policy_frequency: int = 2,
    batch_size: int = 256,
    actor_opt: optax.GradientTransformation | None = None,
    q_opt: optax.GradientTransformation | None = None,
    alpha_logp: str = "fresh",
    activation: str = "relu",
) -> SAC:
    """Builds the static agent description; defaults are CleanRL's.

    ``actor_opt``/``q_opt`` replace the default Adam optimizers (e.g. with
    ``optax.chain(optax.adam(lr), masked_scale())`` for NBSP). ``alpha_logp`` is where the
    temperature loss takes its log-probabilities: ``'fresh'`` (CleanRL) samples the updated
    actor again; ``'reuse'`` (SBX) takes the actor step's, before its update, one actor
    forward pass fewer per actor step (3-6 % of the update's FLOPs). ``activation`` is
    ``'relu'`` or ``'crelu'`` for every hidden layer (``hidden`` are then units, each
    emitting two features; see :func:`nbsp_jax.networks.hidden_widths`).
    """
    if alpha_logp not in ALPHA_LOGP:
        raise ValueError(f"unknown alpha_logp {alpha_logp!r}; valid choices: {ALPHA_LOGP}")
    return SAC(
        actor=GaussianActor(action_dim, tuple(hidden), activation),
        critic=QNetwork(tuple(hidden), activation),
        actor_opt=actor_opt or optax.adam(policy_lr),
        q_opt=q_opt or optax.adam(q_lr),
        alpha_opt=optax.adam(q_lr),
        obs_dim=obs_dim,
        action_dim=action_dim,
        gamma=gamma,
        tau=tau,
        policy_frequency=policy_frequency,
        batch_size=batch_size,
        target_entropy=-float(action_dim),
        alpha_logp=alpha_logp,
    )


def init_state(agent: SAC, key: jax.Array) -> SACState:
    """Initialises parameters (targets equal online critics) and optimizer states for one seed."""
    k_actor, k_q1, k_q2, key = jax.random.split(key, 4)
    obs = jnp.zeros((1, agent.obs_dim), jnp.float32)
    act = jnp.zeros((1, agent.action_dim), jnp.float32)
    actor = agent.actor.init(k_actor, obs)
    q = {"qf1": agent.critic.init(k_q1, obs, act), "qf2": agent.critic.init(k_q2, obs, act)}
    return new_state(agent, actor, q, key)


def sample_action(
    agent: SAC, actor_params: dict, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised action and its log-probability.

    Args:
      obs: ``[..., obs_dim]``.

    Returns:
      ``action [..., action_dim]`` in [-1, 1] and ``log_prob [...]``.
    """
    shape = (*obs.shape[:-1], agent.action_dim)
    return squashed_sample(agent, actor_params, obs, jax.random.normal(key, shape))


def squashed_sample(
    agent: SAC, actor_params: dict, obs: jax.Array, noise: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`sample_action` from given standard-normal ``noise [..., action_dim]``: the
    updates draw a call's noise at once, before their loop."""
    mean, log_std = agent.actor.apply(actor_params, obs)
    std = jnp.exp(log_std)
    x = mean + std * noise
    y = jnp.tanh(x)
    # (x - mean) / std is the noise itself.
    normal_logp = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    log_prob = (normal_logp - jnp.log(1.0 - y**2 + 1e-6)).sum(-1)
    return y, log_prob


def deterministic_action(agent: SAC, actor_params: dict, obs: jax.Array) -> jax.Array:
    """The squashed mean action ``tanh(mean)``, ``[..., action_dim]`` (evaluation)."""
    mean, _ = agent.actor.apply(actor_params, obs)
    return jnp.tanh(mean)


def fisher_log_prob(agent: SAC, actor_params: dict, obs: jax.Array,
                    noise: jax.Array) -> jax.Array:
    """``log pi(a | s)`` of an action the current policy draws with ``noise``, the action held
    fixed: its gradient is a sample of the policy's Fisher score (EWC).

    Args:
      obs: ``[..., obs_dim]``; noise: standard normal ``[..., action_dim]``.

    Returns:
      ``[...]``. The tanh correction does not depend on the parameters once the action is
      fixed, so only the Gaussian density of the pre-squash sample is kept.
    """
    mean, log_std = agent.actor.apply(actor_params, obs)
    x = jax.lax.stop_gradient(mean + jnp.exp(log_std) * noise)
    z = (x - mean) * jnp.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)


def fisher_noise(agent: SAC, key: jax.Array, n: int) -> jax.Array:
    """Noise for :func:`fisher_log_prob`: standard normal ``[n, action_dim]``."""
    return jax.random.normal(key, (n, agent.action_dim))


def q_taken(agent: SAC, q: dict, obs: jax.Array, action: jax.Array) -> jax.Array:
    """``Q1(s, a) + Q2(s, a)`` ``[...]``: the critics' outputs whose gradient (one network's
    per parameter, the two share none) gives their Fisher under a unit-variance Gaussian
    model of the return (EWC)."""
    q1, q2 = _twin_q(agent, q, obs, action)
    return q1 + q2


def _twin_q(agent: SAC, q: dict, obs: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    return agent.critic.apply(q["qf1"], obs, action), agent.critic.apply(q["qf2"], obs, action)


def critic_update(
    agent: SAC, state: SACState, batch: Transition, noise: jax.Array
) -> tuple[SACState, dict]:
    """One Adam step of both critics on ``batch``, then Polyak update of their targets.
    ``noise [B, action_dim]``: standard normal, for the next actions of the target."""
    p = state.params
    alpha = jnp.exp(p.log_alpha)
    next_action, next_logp = squashed_sample(agent, p.actor, batch.next_obs, noise)
    q1_next, q2_next = _twin_q(agent, p.q_target, batch.next_obs, next_action)
    min_next = jnp.minimum(q1_next, q2_next) - alpha * next_logp
    target = batch.reward + (1.0 - batch.terminated) * agent.gamma * min_next
    target = jax.lax.stop_gradient(target)

    def loss_fn(q):
        q1, q2 = _twin_q(agent, q, batch.obs, batch.action)
        l1, l2 = ((q1 - target) ** 2).mean(), ((q2 - target) ** 2).mean()
        return l1 + l2, {"qf1_loss": l1, "qf2_loss": l2, "qf1_values": q1.mean()}

    grads, info = jax.grad(loss_fn, has_aux=True)(p.q)
    updates, q_opt = agent.q_opt.update(grads, state.opt.q, p.q)
    q = optax.apply_updates(p.q, updates)
    q_target = optax.incremental_update(q, p.q_target, agent.tau)
    params = p._replace(q=q, q_target=q_target)
    return state._replace(params=params, opt=state.opt._replace(q=q_opt)), info


def actor_alpha_update(
    agent: SAC, state: SACState, obs: jax.Array, noise: jax.Array
) -> tuple[SACState, dict]:
    """One actor step (``alpha * log pi - min Q``), then one temperature step (CleanRL order).
    ``noise [2, B, action_dim]``: standard normal, for the actor step's actions and for the
    temperature loss's fresh ones (unused with ``alpha_logp='reuse'``)."""
    p = state.params
    alpha = jnp.exp(p.log_alpha)

    def actor_loss_fn(actor):
        action, logp = squashed_sample(agent, actor, obs, noise[0])
        q1, q2 = _twin_q(agent, p.q, obs, action)
        return (alpha * logp - jnp.minimum(q1, q2)).mean(), logp

    (actor_loss, logp), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(p.actor)
    updates, actor_opt = agent.actor_opt.update(grads, state.opt.actor, p.actor)
    actor = optax.apply_updates(p.actor, updates)

    if agent.alpha_logp == "fresh":  # CleanRL: fresh log-probs from the updated actor
        _, logp = squashed_sample(agent, actor, obs, noise[1])
    logp = jax.lax.stop_gradient(logp)

    def alpha_loss_fn(log_alpha):
        return (-jnp.exp(log_alpha) * (logp + agent.target_entropy)).mean()

    alpha_loss, grad = jax.value_and_grad(alpha_loss_fn)(p.log_alpha)
    update, alpha_opt = agent.alpha_opt.update(grad, state.opt.alpha, p.log_alpha)
    log_alpha = optax.apply_updates(p.log_alpha, update)
    params = p._replace(actor=actor, log_alpha=log_alpha)
    opt = state.opt._replace(actor=actor_opt, alpha=alpha_opt)
    info = {"actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": jnp.exp(log_alpha)}
    return state._replace(params=params, opt=opt), info


def update_many(
    agent: SAC, state: SACState, sampler: Sampler, num_updates: int, step0: jax.Array
) -> tuple[SACState, dict]:
    """Runs ``num_updates`` gradient steps in one ``lax.scan``, with no host round-trip.

    Args:
      agent: static agent.
      state: one seed's learner state.
      sampler: where batches come from (e.g. :func:`nbsp_jax.buffers.transitions.sampler`).
      num_updates: static; a multiple of ``agent.policy_frequency``.
      step0: int32 scalar, the gradient-step counter before this call, a multiple of
        ``policy_frequency`` (the loop's counter always is). Batch ``i`` of the call is
        ``sampler.take(plan[i], step0 + i)``; the actor and temperature train on the batches
        with ``(step0 + i) % policy_frequency == 0``.

    The call's random numbers are drawn at once, before the loop, from three keys split off
    ``state.key`` (which advances): the sampler's plan for all ``num_updates`` batches and
    the standard-normal noise of every action sample (one per critic step, two per actor
    step), so the loop body holds no random-number generation.

    Returns:
      The new state and the mean of each loss over the call (scalars).
    """
    pf = agent.policy_frequency
    if num_updates % pf:
        raise ValueError(f"num_updates={num_updates} must be a multiple of policy_frequency={pf}")
    groups = num_updates // pf
    key, k_plan, k_noise = jax.random.split(state.key, 3)
    plan = jax.tree.map(lambda x: x.reshape(groups, pf, *x.shape[1:]),
                        sampler.draw(k_plan, num_updates))
    # Per group: pf critic steps' noise, then pf actor steps' two (actor loss, temperature).
    noise = jax.random.normal(k_noise, (groups, 3 * pf, agent.batch_size, agent.action_dim))

    def macro_step(state, xs):
        i, plan_i, noise_i = xs
        q_infos, a_infos = [], []
        for j in range(pf):
            batch = sampler.take(jax.tree.map(lambda x, j=j: x[j], plan_i), step0 + i * pf + j)
            state, info = critic_update(agent, state, batch, noise_i[j])
            q_infos.append(info)
            if j == 0:
                # CleanRL's delayed policy update: at the steps with g % pf == 0, pf actor and
                # temperature steps on that step's batch, right after its critic step. So a
                # batch the sampler replays at such a step feeds the actor as well.
                for m in range(pf):
                    pair = noise_i[pf + 2 * m: pf + 2 * m + 2]
                    state, info = actor_alpha_update(agent, state, batch.obs, pair)
                    a_infos.append(info)
        info = jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *q_infos)
        info.update(jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *a_infos))
        return state, info

    state, infos = jax.lax.scan(macro_step, state._replace(key=key),
                                (jnp.arange(groups), plan, noise))
    return state, jax.tree.map(jnp.mean, infos)
