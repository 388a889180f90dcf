"""Discrete SAC with CleanRL ``sac_atari.py`` semantics, as pure functions for one seed.

The state types are those of the continuous agent (:class:`nbsp_jax.types.SACState`,
:class:`~nbsp_jax.types.SACParams`, :class:`~nbsp_jax.types.SACOptStates`), so NBSP masking
(``masked_scale`` chained into ``actor_opt``/``q_opt``), vmapping over seeds and checkpoints
work unchanged; ``params.q = {'qf1': vars, 'qf2': vars}`` and ``params.q_target`` likewise.

What matches CleanRL ``sac_atari.py`` (one update = critic, actor, temperature, in that order):

- networks: actor and each critic own a Nature-CNN trunk (:mod:`nbsp_jax.networks.nature_cnn`);
  observations are uint8 and scaled by 1/255 inside the networks;
- critic target, with the *expectation over actions* in place of a sampled next action::

      soft(s') = sum_a pi(a|s') * (min(Q1'(s', a), Q2'(s', a)) - alpha * log pi(a|s'))
      y = r + gamma * (1 - terminated) * soft(s')

  (truncation stores ``terminated = 0`` and so bootstraps); loss ``MSE(Q1(s, a), y) +
  MSE(Q2(s, a), y)`` on the taken actions, one Adam over both critics;
- actor loss ``E[pi(a|s) * (alpha * log pi(a|s) - min(Q1, Q2)(s, a))]`` with the freshly
  updated critics, Q detached;
- temperature loss ``E[pi(a|s) * (-exp(log_alpha) * (log pi(a|s) + target_entropy))]`` with
  ``pi`` and ``log pi`` from the actor *before* its update, detached (CleanRL reuses them).
  CleanRL multiplies by ``exp(log_alpha)``, not ``log_alpha`` (checked in its ``sac_atari.py``);
  ``log_alpha`` starts at 0 (alpha = 1);
- ``target_entropy = -scale * log(1 / |A|) = scale * log|A|``, ``scale = 0.89``;
- Adam with ``eps = 1e-4`` for all three optimizers (CleanRL's "numerical stability" setting);
- hard target copy (CleanRL ``tau = 1``) every ``target_network_frequency = 8000`` env steps,
  i.e. every ``8000 / update_frequency = 2000`` gradient steps (``target_every``).

``E[...]`` above is CleanRL's ``.mean()`` over the ``[batch, actions]`` tensor, i.e.
``(1 / |A|) * mean_batch(sum_a ...)``; ``action_reduction='sum'`` gives the textbook
``mean_batch(sum_a ...)`` instead (a constant factor 1/|A| on the actor and temperature losses;
Adam nearly cancels it, except where gradients are near ``eps``).

Differences from CleanRL: updates run fused in a ``lax.scan`` per chunk of env steps
(:func:`update_many`), and the target copy happens after the gradient step whose 1-based count
``step0 + i + 1`` is a multiple of ``target_every`` (CleanRL counts env steps from the start of
the run, learning starts included, so its copies fall at a fixed phase offset from ours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.agents.common import new_state
from nbsp_jax.networks import NATURE_CNN, DiscreteActor, DiscreteQ
from nbsp_jax.types import SACOptStates, SACParams, SACState, Sampler, Transition

__all__ = [
    "SACDiscrete",
    "SACOptStates",
    "SACParams",
    "SACState",
    "Sampler",
    "actor_alpha_update",
    "actor_loss",
    "alpha_loss",
    "critic_loss",
    "critic_update",
    "greedy_action",
    "hard_target_update",
    "init_state",
    "make_sac_discrete",
    "policy",
    "sample_action",
    "target_entropy_for",
    "update",
    "update_many",
]

ACTION_REDUCTIONS = ("mean", "sum")


class SACDiscrete(NamedTuple):
    """The static parts of a discrete agent: networks, optimizers and hyper-parameters."""

    actor: DiscreteActor
    critic: DiscreteQ
    actor_opt: optax.GradientTransformation
    q_opt: optax.GradientTransformation
    alpha_opt: optax.GradientTransformation
    obs_shape: tuple[int, ...]
    num_actions: int
    gamma: float
    batch_size: int
    target_entropy: float
    target_every: int
    action_reduction: str


def target_entropy_for(num_actions: int, scale: float = 0.89) -> float:
    """CleanRL's ``-scale * log(1 / |A|)`` (= ``scale * log|A|``)."""
    return -scale * math.log(1.0 / num_actions)


def make_sac_discrete(
    obs_shape: Sequence[int],
    num_actions: int,
    hidden: Sequence[int] = (768, 768),
    policy_lr: float = 1e-4,
    q_lr: float = 1e-4,
    gamma: float = 0.99,
    target_entropy_scale: float = 0.89,
    batch_size: int = 64,
    actor_opt: optax.GradientTransformation | None = None,
    q_opt: optax.GradientTransformation | None = None,
    target_every: int = 2000,
    adam_eps: float = 1e-4,
    convs: Sequence[tuple[int, int, int]] = NATURE_CNN,
    conv_impl: str = "auto",
    action_reduction: str = "mean",
    activation: str = "relu",
) -> SACDiscrete:
    """Builds the static agent; defaults are the paper's (lr 1e-4, hidden 768x2) and CleanRL's.

    Args:
      obs_shape: one observation, ``(stack, H, W)``, e.g. ``(4, 84, 84)``.
      num_actions: ``|A|`` (18 for the full Atari action set).
      actor_opt, q_opt: replace the default ``optax.adam(lr, eps=adam_eps)`` (e.g. with
        ``optax.chain(optax.adam(lr, eps=1e-4), masked_scale())`` for NBSP). The temperature
        always gets a plain Adam with ``q_lr`` (never masked).
      target_every: gradient steps between hard target copies (CleanRL: 8000 env steps / 4);
        ``<= 0`` disables the copies in :func:`update_many`.
      convs, conv_impl: trunk layout and conv implementation (see :mod:`networks_atari`).
      action_reduction: ``'mean'`` (CleanRL) or ``'sum'`` over actions in the actor and
        temperature losses; see the module docstring.
      activation: of the dense hidden layers, ``'relu'`` or ``'crelu'`` (``hidden`` are then
        units, each emitting two features; see :func:`nbsp_jax.networks.hidden_widths`).
    """
    if action_reduction not in ACTION_REDUCTIONS:
        raise ValueError(f"action_reduction must be one of {ACTION_REDUCTIONS}")
    net = dict(hidden=tuple(hidden), convs=tuple(tuple(c) for c in convs), conv_impl=conv_impl,
               activation=activation)
    return SACDiscrete(
        actor=DiscreteActor(num_actions, **net),
        critic=DiscreteQ(num_actions, **net),
        actor_opt=actor_opt or optax.adam(policy_lr, eps=adam_eps),
        q_opt=q_opt or optax.adam(q_lr, eps=adam_eps),
        alpha_opt=optax.adam(q_lr, eps=adam_eps),
        obs_shape=tuple(obs_shape),
        num_actions=num_actions,
        gamma=gamma,
        batch_size=batch_size,
        target_entropy=target_entropy_for(num_actions, target_entropy_scale),
        target_every=target_every,
        action_reduction=action_reduction,
    )


def init_state(agent: SACDiscrete, key: jax.Array) -> SACState:
    """Initialises parameters (targets equal online critics) and optimizer states for one seed."""
    k_actor, k_q1, k_q2, key = jax.random.split(key, 4)
    obs = jnp.zeros((1, *agent.obs_shape), jnp.uint8)
    actor = agent.actor.init(k_actor, obs)
    q = {"qf1": agent.critic.init(k_q1, obs), "qf2": agent.critic.init(k_q2, obs)}
    return new_state(agent, actor, q, key)


def policy(agent: SACDiscrete, actor_params: dict, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(probs, log_probs)``, each ``[..., num_actions]``, of the categorical policy."""
    logp = jax.nn.log_softmax(agent.actor.apply(actor_params, obs), axis=-1)
    return jnp.exp(logp), logp


def sample_action(
    agent: SACDiscrete, actor_params: dict, obs: jax.Array, key: jax.Array
) -> jax.Array:
    """Actions drawn from the policy: uint8 ``obs [B, *obs_shape]`` -> int32 ``[B]``."""
    logits = agent.actor.apply(actor_params, obs)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def greedy_action(agent: SACDiscrete, actor_params: dict, obs: jax.Array) -> jax.Array:
    """The most probable action, int32 ``[B]`` (evaluation)."""
    return jnp.argmax(agent.actor.apply(actor_params, obs), axis=-1).astype(jnp.int32)


def fisher_log_prob(agent: SACDiscrete, actor_params: dict, obs: jax.Array,
                    noise: jax.Array) -> jax.Array:
    """``log pi(a | s)`` of an action drawn from the current policy with Gumbel ``noise``
    (``argmax(logits + noise)``), the action held fixed: a sample of the Fisher score (EWC).

    Args:
      obs: uint8 ``[B, *obs_shape]``; noise: standard Gumbel ``[B, num_actions]``.

    Returns:
      ``[B]``.
    """
    logits = agent.actor.apply(actor_params, obs)
    a = jnp.argmax(jax.lax.stop_gradient(logits) + noise, axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, a[..., None], axis=-1)[..., 0]


def fisher_noise(agent: SACDiscrete, key: jax.Array, n: int) -> jax.Array:
    """Noise for :func:`fisher_log_prob`: standard Gumbel ``[n, num_actions]``."""
    return jax.random.gumbel(key, (n, agent.num_actions))


def q_taken(agent: SACDiscrete, q: dict, obs: jax.Array, action: jax.Array) -> jax.Array:
    """``Q1(s)[a] + Q2(s)[a]`` ``[B]`` for int actions ``[B]`` (EWC's critic Fisher)."""
    a = action.astype(jnp.int32)[..., None]
    q1 = jnp.take_along_axis(agent.critic.apply(q["qf1"], obs), a, axis=-1)[..., 0]
    q2 = jnp.take_along_axis(agent.critic.apply(q["qf2"], obs), a, axis=-1)[..., 0]
    return q1 + q2


def _reduce(agent: SACDiscrete, x: jax.Array) -> jax.Array:
    """The expectation over ``[B, A]`` terms: CleanRL's ``.mean()``, or sum over actions."""
    if agent.action_reduction == "mean":
        return x.mean()
    return x.sum(-1).mean()


def _taken(batch: Transition) -> jax.Array:
    """Actions of a batch as int32 ``[B]`` (accepts ``[B]`` or ``[B, 1]``, any dtype)."""
    return batch.action.reshape(batch.reward.shape).astype(jnp.int32)


def critic_loss(
    agent: SACDiscrete,
    q: dict,
    q_target: dict,
    actor: dict,
    log_alpha: jax.Array,
    batch: Transition,
) -> tuple[jax.Array, dict]:
    """Sum of the twin critics' MSE against the soft target (gradient flows into ``q`` only)."""
    alpha = jnp.exp(log_alpha)
    next_probs, next_logp = policy(agent, actor, batch.next_obs)
    q1_next = agent.critic.apply(q_target["qf1"], batch.next_obs)
    q2_next = agent.critic.apply(q_target["qf2"], batch.next_obs)
    soft = (next_probs * (jnp.minimum(q1_next, q2_next) - alpha * next_logp)).sum(-1)
    target = batch.reward + (1.0 - batch.terminated) * agent.gamma * soft
    target = jax.lax.stop_gradient(target)

    a = _taken(batch)[:, None]
    q1 = jnp.take_along_axis(agent.critic.apply(q["qf1"], batch.obs), a, axis=-1)[:, 0]
    q2 = jnp.take_along_axis(agent.critic.apply(q["qf2"], batch.obs), a, axis=-1)[:, 0]
    l1, l2 = ((q1 - target) ** 2).mean(), ((q2 - target) ** 2).mean()
    info = {"qf1_loss": l1, "qf2_loss": l2, "qf1_values": q1.mean(), "qf2_values": q2.mean()}
    return l1 + l2, info


def actor_loss(
    agent: SACDiscrete, actor: dict, q: dict, log_alpha: jax.Array, obs: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``E[pi * (alpha * log pi - min Q)]``; returns the loss and ``(probs, log_probs)``."""
    alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
    min_q = jnp.minimum(agent.critic.apply(q["qf1"], obs), agent.critic.apply(q["qf2"], obs))
    min_q = jax.lax.stop_gradient(min_q)
    probs, logp = policy(agent, actor, obs)
    return _reduce(agent, probs * (alpha * logp - min_q)), (probs, logp)


def alpha_loss(
    agent: SACDiscrete, log_alpha: jax.Array, probs: jax.Array, logp: jax.Array
) -> jax.Array:
    """``E[pi * (-exp(log_alpha) * (log pi + target_entropy))]`` with ``pi`` detached."""
    probs, logp = jax.lax.stop_gradient(probs), jax.lax.stop_gradient(logp)
    return _reduce(agent, probs * (-jnp.exp(log_alpha) * (logp + agent.target_entropy)))


def critic_update(agent: SACDiscrete, state: SACState, batch: Transition) -> tuple[SACState, dict]:
    """One Adam step of both critics on ``batch`` (targets untouched: see hard_target_update)."""
    p = state.params
    grads, info = jax.grad(
        lambda q: critic_loss(agent, q, p.q_target, p.actor, p.log_alpha, batch), has_aux=True
    )(p.q)
    updates, q_opt = agent.q_opt.update(grads, state.opt.q, p.q)
    q = optax.apply_updates(p.q, updates)
    return state._replace(params=p._replace(q=q), opt=state.opt._replace(q=q_opt)), info


def actor_alpha_update(
    agent: SACDiscrete, state: SACState, obs: jax.Array
) -> tuple[SACState, dict]:
    """One actor step, then one temperature step on the pre-update policy (CleanRL order)."""
    p = state.params
    (a_loss, (probs, logp)), grads = jax.value_and_grad(
        lambda actor: actor_loss(agent, actor, p.q, p.log_alpha, obs), has_aux=True
    )(p.actor)
    updates, actor_opt = agent.actor_opt.update(grads, state.opt.actor, p.actor)
    actor = optax.apply_updates(p.actor, updates)

    t_loss, grad = jax.value_and_grad(lambda la: alpha_loss(agent, la, probs, logp))(p.log_alpha)
    update_, alpha_opt = agent.alpha_opt.update(grad, state.opt.alpha, p.log_alpha)
    log_alpha = optax.apply_updates(p.log_alpha, update_)

    params = p._replace(actor=actor, log_alpha=log_alpha)
    opt = state.opt._replace(actor=actor_opt, alpha=alpha_opt)
    info = {
        "actor_loss": a_loss,
        "alpha_loss": t_loss,
        "alpha": jnp.exp(log_alpha),
        "entropy": -(probs * logp).sum(-1).mean(),
    }
    return state._replace(params=params, opt=opt), info


def hard_target_update(state: SACState) -> SACState:
    """Copies the online critics into the targets (CleanRL ``tau = 1``)."""
    p = state.params
    return state._replace(params=p._replace(q_target=jax.tree.map(jnp.copy, p.q)))


def update(agent: SACDiscrete, state: SACState, batch: Transition) -> tuple[SACState, dict]:
    """One CleanRL gradient step: critics, then actor, then temperature, all on ``batch``."""
    state, info = critic_update(agent, state, batch)
    state, a_info = actor_alpha_update(agent, state, batch.obs)
    return state, {**info, **a_info}


def update_many(
    agent: SACDiscrete,
    state: SACState,
    sampler: Sampler,
    num_updates: int,
    step0: jax.Array,
    target_every: int | None = None,
) -> tuple[SACState, dict]:
    """Runs ``num_updates`` gradient steps in one ``lax.scan``, with no host round-trip.

    Args:
      agent: static agent.
      state: one seed's learner state.
      sampler: where batches come from (e.g. :func:`nbsp_jax.buffers.transitions.sampler`).
      num_updates: static number of gradient steps.
      step0: int32 scalar, the gradient-step counter before this call (drives the replay
        cadence and the target copies; may be unbatched under ``vmap``).
      target_every: static; the targets are copied after gradient step ``i`` (0-based within
        this call) when ``(step0 + i + 1) % target_every == 0``. Defaults to
        ``agent.target_every``; ``<= 0`` never copies.

    Returns:
      The new state and the mean of each loss over the call (scalars).
    """
    every = agent.target_every if target_every is None else int(target_every)
    step0 = jnp.asarray(step0, jnp.int32)

    # The batches' random numbers are drawn at once, before the loop (``state.key`` advances).
    key, k_plan = jax.random.split(state.key)
    plan = sampler.draw(k_plan, num_updates)

    def step(state, xs):
        i, plan_i = xs
        batch = sampler.take(plan_i, step0 + i)
        state, info = update(agent, state, batch)
        if every > 0:
            state = jax.lax.cond(
                (step0 + i + 1) % every == 0, hard_target_update, lambda s: s, state
            )
        return state, info

    state, infos = jax.lax.scan(step, state._replace(key=key),
                                (jnp.arange(num_updates, dtype=jnp.int32), plan))
    return state, jax.tree.map(jnp.mean, infos)
