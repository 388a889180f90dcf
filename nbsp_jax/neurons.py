"""Skill-neuron scores and masks (NBSP Eq. 1-5 and 7, Algorithm 1).

Shapes: ``T`` recorded steps, ``N`` neurons of one layer. A neuron is one output unit of a
hidden Dense layer or one output channel of a Conv layer (its activation is the channel's mean
over height and width, see :func:`channel_mean`). Per-layer values travel in dicts keyed by the
layer's module path (``'fc0'``, ``'trunk/conv0'``), the same keys that
:func:`nbsp_jax.masking.masks_from_layers` takes. The last layer of a network is never a
candidate: leave it out of these dicts.

Everything here is jittable (``proportion`` static) and vmappable over a leading seed axis.

Selectors for the Table 3 ablation (:func:`skill_scores` / :func:`score_layers` for the goal
method, :func:`random_scores`, :func:`activation_scores`, :func:`weight_scores`) all return a
scores dict that :func:`neuron_masks` ranks. Only goal scores lie in ``[0.5, 1]`` and mean
anything in the mask formula ``alpha * (1 - score)``; with another selector pass the goal scores
as ``mask_values``, so that the selector decides *which* neurons are masked and the goal scores
decide *how much*.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nbsp_jax.masking import layer_paths

__all__ = [
    "activation_scores",
    "channel_mean",
    "constant_units",
    "is_constant",
    "neuron_masks",
    "num_selected",
    "random_scores",
    "score_layers",
    "select_top",
    "skill_scores",
    "weight_scores",
]

Scores = dict[str, jax.Array]


def channel_mean(act: jax.Array) -> jax.Array:
    """Reduces a conv activation ``[T, H, W, C]`` (or any ``[T, ..., N]``) to ``[T, N]``."""
    act = jnp.asarray(act)
    if act.ndim < 2:
        raise ValueError(f"channel_mean: expected [T, ..., N], got shape {act.shape}")
    return act.reshape(act.shape[0], -1, act.shape[-1]).mean(axis=1)


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


def num_selected(total: int, proportion: float) -> int:
    """Number of skill neurons: ``proportion * total`` rounded to the nearest integer.

    Halves round up (``0.5 * 5 -> 3``); rounding (rather than flooring) also absorbs float
    error such as ``0.29 * 100 = 28.999...``.

    Args:
      total: number of candidate neurons.
      proportion: fraction in ``[0, 1]``.

    Returns:
      An int in ``[0, total]``.
    """
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"proportion must be in [0, 1], got {proportion}")
    return min(total, int(math.floor(proportion * total + 0.5)))


def select_top(scores: Mapping[str, jax.Array], proportion: float) -> dict[str, jax.Array]:
    """Marks the top ``proportion`` of all neurons in ``scores``, ranked jointly (Eq. 5).

    Layers are concatenated in sorted key order; a neuron's global index is its position in
    that concatenation. Neurons are ranked by descending score, ties going to the lower global
    index, so the result does not depend on dict insertion order. NaN scores rank last. The
    count is :func:`num_selected` of the total.

    Args:
      scores: ``{layer: [N_layer]}``; higher means more of a skill neuron.
      proportion: fraction of neurons to select (static under ``jit``).

    Returns:
      ``{layer: [N_layer] bool}`` with exactly ``num_selected(sum N_layer, proportion)`` True.
    """
    keys = sorted(scores)
    for k in keys:
        if jnp.ndim(scores[k]) != 1:
            raise ValueError(f"select_top: scores['{k}'] must be 1-D, got {jnp.shape(scores[k])}")
    sizes = [jnp.shape(scores[k])[0] for k in keys]
    flat = jnp.concatenate([jnp.asarray(scores[k], jnp.float32) for k in keys])
    total = flat.shape[0]
    m = num_selected(total, proportion)
    index = jnp.arange(total, dtype=jnp.int32)
    # Sort by (-score, index): descending score, lower index first on ties; NaN last.
    _, order = jax.lax.sort((-flat, index), num_keys=2)
    chosen = jnp.zeros((total,), bool).at[order[:m]].set(True)
    out, start = {}, 0
    for k, n in zip(keys, sizes, strict=True):
        out[k] = chosen[start : start + n]
        start += n
    return out


def neuron_masks(
    scores: Mapping[str, jax.Array],
    proportion: float = 0.2,
    alpha: float = 0.2,
    hard: bool = False,
    mask_values: Mapping[str, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """Per-neuron update masks (Eq. 7).

    The top ``proportion`` of neurons by ``scores`` (see :func:`select_top`) are skill neurons
    and get ``alpha * (1 - value)``, or 0 when ``hard``; every other neuron gets 1. ``value``
    is the neuron's goal score: ``scores`` itself by default, or ``mask_values`` when the
    ranking comes from another selector (random, activation, weight norm), whose values do not
    lie in ``[0.5, 1]`` and would give meaningless or negative masks.

    Args:
      scores: ``{layer: [N_layer]}`` ranking scores (last layer excluded by the caller).
      proportion: fraction of all neurons that are skill neurons (static under ``jit``).
      alpha: restriction strength (0.2 in the paper).
      hard: if True, skill neurons get mask 0 (the "hard masking" ablation).
      mask_values: optional ``{layer: [N_layer]}`` goal scores used in the formula; same keys
        and shapes as ``scores``.

    Returns:
      ``{layer: [N_layer]}`` float32 masks, same keys as ``scores``. To keep, per neuron, the
      smallest mask over past tasks, combine with ``jax.tree.map(jnp.minimum, old, new)``.
    """
    if mask_values is not None and set(mask_values) != set(scores):
        raise ValueError(
            f"neuron_masks: mask_values keys {sorted(mask_values)} != scores keys {sorted(scores)}"
        )
    values = scores if mask_values is None else mask_values
    selected = select_top(scores, proportion)
    out = {}
    for k in scores:
        v = jnp.asarray(values[k], jnp.float32)
        if v.shape != selected[k].shape:
            raise ValueError(
                f"neuron_masks: mask_values['{k}'] has shape {v.shape}, "
                f"expected {selected[k].shape}"
            )
        skill = jnp.zeros_like(v) if hard else alpha * (1.0 - v)
        out[k] = jnp.where(selected[k], skill, 1.0).astype(jnp.float32)
    return out


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
