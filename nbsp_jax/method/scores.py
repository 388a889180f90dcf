"""Skill-neuron scores (NBSP Eq. 1-4, Algorithm 1) and the ablation's other selectors.

Shapes: ``T`` recorded steps, ``N`` neurons of one layer. A neuron is one output unit of a
hidden Dense layer or one output channel of a Conv layer (its activation is the channel's mean
over height and width, see :func:`nbsp_jax.networks.channel_mean`). Per-layer values travel in
dicts keyed by the layer's module path (``'fc0'``, ``'trunk/conv0'``), the same keys that
:func:`nbsp_jax.method.masks_from_layers` takes. The last layer of a network is never a
candidate: leave it out of these dicts.

Everything here is jittable (``proportion`` static) and vmappable over a leading seed axis.

Selectors for the Table 3 ablation (:func:`skill_scores` / :func:`score_layers` for the goal
method, :func:`random_scores`, :func:`activation_scores`, :func:`weight_scores`) all return a
scores dict that :func:`nbsp_jax.method.neuron_masks` ranks. Only goal scores lie in
``[0.5, 1]`` and mean anything in the mask formula ``alpha * (1 - score)``; with another
selector pass the goal scores as ``mask_values``, so that the selector decides *which*
neurons are masked and the goal scores decide *how much*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nbsp_jax.method.masking import layer_paths
from nbsp_jax.method.switches import SELECTORS
from nbsp_jax.networks import record
from nbsp_jax.types import SACState

__all__ = [
    "activation_scores",
    "constant_units",
    "is_constant",
    "random_scores",
    "record_networks",
    "score_layers",
    "score_networks",
    "skill_scores",
    "weight_scores",
]

Scores = dict[str, jax.Array]


def _valid_weights(valid: jax.Array | None, t: int) -> jax.Array:
    if valid is None:
        return jnp.ones((t,), jnp.float32)
    return jnp.asarray(valid).astype(jnp.float32)


def skill_scores(act: jax.Array, goal: jax.Array, valid: jax.Array | None = None,
                 neutral_constant: bool = False) -> jax.Array:
    """Goal-oriented skill score of every neuron of one layer (Eq. 1-4).

    ``mean_a[n] = mean_t act[t, n]``; ``mean_q = mean_t goal[t]``;
    ``R_over[n] = mean_t 1[(act[t, n] > mean_a[n]) == (goal[t] > mean_q)]`` (strict ``>``);
    ``score = max(R_over, 1 - R_over)``. A neuron that never exceeds its mean (e.g. a dead
    ReLU) gets ``R_over`` = the fraction of steps with ``goal <= mean_q``; the ``max`` makes the
    score the same if rounding puts a constant neuron's mean just below its value.

    Args:
      act: activations ``[T, N]`` (post-nonlinearity; conv channels already averaged).
      goal: goal metric ``[T]`` (Meta-World: episode success 0/1; Atari: episode return).
      valid: optional ``[T]`` bool; steps where it is False are left out of every mean (for a
        fixed-size buffer that is not full). With no valid step every score is 0.5.
      neutral_constant: if True, a neuron whose activation is constant over the valid steps
        scores 0.5 (it carries no goal information). The paper's formula (False) gives it
        ``max(P(goal > mean), P(goal <= mean))``, which is high when the goal is imbalanced,
        so dead units can outrank informative ones.

    Returns:
      ``[N]`` float32 scores in ``[0.5, 1]``.
    """
    act = jnp.asarray(act, jnp.float32)
    goal = jnp.asarray(goal, jnp.float32)
    if act.ndim != 2 or goal.shape != act.shape[:1]:
        raise ValueError(
            f"skill_scores: expected act [T, N] and goal [T], got {act.shape} and {goal.shape}"
        )
    w = _valid_weights(valid, act.shape[0])
    count = w.sum()
    denom = jnp.maximum(count, 1.0)
    mean_a = (act * w[:, None]).sum(axis=0) / denom
    mean_q = (goal * w).sum() / denom
    agree = (act > mean_a) == (goal > mean_q)[:, None]
    r_over = (agree * w[:, None]).sum(axis=0) / denom
    score = jnp.maximum(r_over, 1.0 - r_over)
    if neutral_constant:
        score = jnp.where(constant_units(act, valid), 0.5, score)
    return jnp.where(count > 0, score, 0.5)


def constant_units(act: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Which neurons never change over the (valid) recorded steps, e.g. dead ReLU units.

    Args:
      act: activations ``[T, N]``.
      valid: optional ``[T]`` bool.

    Returns:
      ``[N]`` bool, True where ``max == min`` over the valid steps (True for all with none).
    """
    w = _valid_weights(valid, act.shape[0])[:, None] > 0
    hi = jnp.max(jnp.where(w, act, -jnp.inf), axis=0)
    lo = jnp.min(jnp.where(w, act, jnp.inf), axis=0)
    return ~(hi > lo)


def score_layers(
    acts: Mapping[str, jax.Array], goal: jax.Array, valid: jax.Array | None = None,
    neutral_constant: bool = False,
) -> Scores:
    """:func:`skill_scores` for every layer.

    Args:
      acts: ``{layer: [T, N_layer]}`` activations.
      goal: goal metric ``[T]``.
      valid: optional ``[T]`` bool mask of steps to use.
      neutral_constant: see :func:`skill_scores`.

    Returns:
      ``{layer: [N_layer]}`` float32 scores in ``[0.5, 1]``.
    """
    return {k: skill_scores(v, goal, valid, neutral_constant) for k, v in acts.items()}


def is_constant(goal: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """True when the goal metric has no variation (``max == min``) over the (valid) steps.

    A constant goal makes every ``R_over`` equal, so the scores carry no goal information; the
    caller should log it and fall back to a graded metric (e.g. episode return).

    Args:
      goal: ``[T]`` goal metric.
      valid: optional ``[T]`` bool mask of steps to use.

    Returns:
      A scalar bool array (use ``bool(...)`` outside ``jit``).
    """
    goal = jnp.asarray(goal, jnp.float32)
    w = jnp.ones(goal.shape, bool) if valid is None else jnp.asarray(valid, bool)
    hi = jnp.max(jnp.where(w, goal, -jnp.inf))
    lo = jnp.min(jnp.where(w, goal, jnp.inf))
    return ~(hi > lo)


def random_scores(key: jax.Array, sizes: Mapping[str, int]) -> Scores:
    """Uniform ``[0, 1)`` scores: ranking by them selects a uniformly random set of neurons.

    Args:
      key: a PRNG key (vmap over a batch of keys for seeds).
      sizes: ``{layer: N_layer}``.

    Returns:
      ``{layer: [N_layer]}`` float32; layers take consecutive slices of one draw in sorted key
      order, so the result is independent of dict order.
    """
    keys = sorted(sizes)
    flat = jax.random.uniform(key, (sum(int(sizes[k]) for k in keys),), jnp.float32)
    out, start = {}, 0
    for k in keys:
        n = int(sizes[k])
        out[k] = flat[start : start + n]
        start += n
    return out


def activation_scores(acts: Mapping[str, jax.Array], valid: jax.Array | None = None) -> Scores:
    """Mean absolute activation over the recorded steps.

    Args:
      acts: ``{layer: [T, N_layer]}`` activations.
      valid: optional ``[T]`` bool mask of steps to use.

    Returns:
      ``{layer: [N_layer]}`` float32 ``mean_t |act[t, n]|`` over the valid steps.
    """
    out = {}
    for k, a in acts.items():
        a = jnp.asarray(a, jnp.float32)
        if a.ndim != 2:
            raise ValueError(f"activation_scores: acts['{k}'] must be [T, N], got {a.shape}")
        w = _valid_weights(valid, a.shape[0])
        out[k] = (jnp.abs(a) * w[:, None]).sum(axis=0) / jnp.maximum(w.sum(), 1.0)
    return out


def _module(params: Any, layer: str) -> Any:
    tree = params["params"] if isinstance(params, Mapping) and "params" in params else params
    try:
        for part in layer.split("/"):
            tree = tree[part]
        return tree["kernel"]
    except (KeyError, TypeError, IndexError):
        raise ValueError(
            f"weight_scores: no kernel for layer '{layer}'; layers: {layer_paths(params)}"
        ) from None


def weight_scores(params: Any, layers: Iterable[str]) -> Scores:
    """L2 norm of each output unit's incoming weights.

    Args:
      params: a Flax param dict, with or without the outer ``'params'`` key.
      layers: module paths (``'fc0'``, ``'trunk/conv0'``) of the candidate layers.

    Returns:
      ``{layer: [N_layer]}`` float32: the kernel reshaped to ``(-1, N_layer)`` (Dense
      ``(in, N)``, Conv ``(h, w, in, N)``), its norm over axis 0.
    """
    out = {}
    for layer in layers:
        kernel = jnp.asarray(_module(params, layer), jnp.float32)
        out[layer] = jnp.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
    return out


def record_networks(agent, state: SACState, obs: jax.Array, action: jax.Array,
                    chunk: int | None = None, critic_takes_action: bool = True) -> dict:
    """Post-ReLU hidden activations of each network: ``{net: {layer: [T, N]}}``.

    The actor sees ``obs [T, ...]``; critics see the recorded pairs ``(obs, action [T, A])``,
    or ``obs`` alone when not ``critic_takes_action`` (discrete critics output every action's
    value).

    Args:
      agent: anything with ``actor`` and ``critic`` Flax modules (both SAC agents).
      chunk: record ``chunk`` steps at a time (``lax.map``), so that conv feature maps of
        ``T`` frames never coexist in memory (only their channel means are kept); ``None``
        records all ``T`` at once.
    """
    p = state.params
    critic_in = (lambda o, a: (o, a)) if critic_takes_action else (lambda o, a: (o,))

    def rec(o, a):
        return {
            "actor": record(agent.actor, p.actor, o)[1],
            "qf1": record(agent.critic, p.q["qf1"], *critic_in(o, a))[1],
            "qf2": record(agent.critic, p.q["qf2"], *critic_in(o, a))[1],
        }

    t = obs.shape[0]
    if chunk is None or t <= chunk:
        return rec(obs, action)
    pad = lambda x: jnp.pad(x, [(0, -t % chunk)] + [(0, 0)] * (x.ndim - 1))
    split = lambda x: pad(x).reshape(-1, chunk, *x.shape[1:])
    out = jax.lax.map(lambda xs: rec(*xs), (split(obs), split(action)))
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:t], out)


def _net_params(state: SACState, net: str) -> dict:
    return state.params.actor if net == "actor" else state.params.q[net]


def score_networks(
    agent, state: SACState, obs: jax.Array, action: jax.Array, goal: jax.Array,
    valid: jax.Array, key: jax.Array, selector: str = "goal", neutral_constant: bool = False,
    chunk: int | None = None, critic_takes_action: bool = True, acts: dict | None = None,
) -> tuple[dict, dict, dict]:
    """Goal scores (Eq. 1-4) and ranking scores (by ``selector``) of every hidden neuron.

    Args:
      obs, action: recorded steps ``[T, D]``, ``[T, A]``.
      goal: goal metric ``[T]`` (episode success or return of the step's episode).
      valid: bool ``[T]``, which recorded rows are real.
      key: PRNG key for the ``random`` selector.
      selector: one of :data:`SELECTORS`; decides *which* neurons are skill neurons. The goal
        scores always give the mask values.
      neutral_constant: score neurons with constant activation 0.5 (see
        :func:`nbsp_jax.skill_scores`).
      chunk, critic_takes_action: see :func:`record_networks`.
      acts: the activations if already recorded (:func:`record_networks` of the same
        arguments); None records them.

    Returns:
      ``(goal_scores, rank_scores, constant)``, each ``{net: {layer: [N]}}``; ``constant``
      (bool) marks the neurons whose activation never changed over the valid steps.
    """
    if acts is None:
        acts = record_networks(agent, state, obs, action, chunk, critic_takes_action)
    goal_scores = {n: score_layers(a, goal, valid, neutral_constant)
                   for n, a in acts.items()}
    constant = {n: {k: constant_units(v, valid) for k, v in a.items()}
                for n, a in acts.items()}
    if selector == "goal":
        return goal_scores, goal_scores, constant
    rank = {}
    for i, (net, layer_acts) in enumerate(acts.items()):
        if selector == "random":
            sizes = {k: v.shape[-1] for k, v in layer_acts.items()}
            rank[net] = random_scores(jax.random.fold_in(key, i), sizes)
        elif selector == "activation":
            rank[net] = activation_scores(layer_acts, valid)
        elif selector == "weight":
            rank[net] = weight_scores(_net_params(state, net), list(layer_acts))
        else:
            raise ValueError(f"unknown selector {selector!r}; valid choices: {SELECTORS}")
    return goal_scores, rank, constant
