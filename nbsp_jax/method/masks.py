"""From scores to masks (NBSP Eq. 5 and 7): joint top-``m`` selection of skill neurons per
network, per-neuron mask values, and their installation into ``masked_scale``'s state.

Everything here is jittable (``proportion`` static) and vmappable over a leading seed axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from nbsp_jax.method.masking import get_masks, masks_from_layers, set_masks
from nbsp_jax.types import SACState

__all__ = ["build_masks", "install_masks", "neuron_masks", "num_selected", "select_top"]


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


def build_masks(goal_scores: dict, rank_scores: dict, proportion: float, alpha: float,
                hard: bool) -> tuple[dict, dict]:
    """Per-layer masks and skill-neuron sets of each network.

    Returns:
      ``(masks, skill)``: ``{net: {layer: [N] float32}}`` and ``{net: {layer: [N] bool}}``.
    """
    masks, skill = {}, {}
    for net in goal_scores:
        masks[net] = neuron_masks(rank_scores[net], proportion, alpha, hard,
                                          mask_values=goal_scores[net])
        skill[net] = select_top(rank_scores[net], proportion)
    return masks, skill


def install_masks(state: SACState, layer_masks: dict, target: str = "both",
                  policy: str = "latest") -> SACState:
    """Writes new masks into the ``masked_scale`` states of the actor and/or critic optimizers.

    Args:
      state: a learner state whose optimizers contain ``masked_scale``.
      layer_masks: ``{net: {layer: [N]}}`` from :func:`build_masks`.
      target: ``'actor'``, ``'critic'`` or ``'both'`` (Table 4); untargeted networks keep
        all-ones masks.
      policy: ``'latest'`` (the paper: masks from the last task only) or ``'min'`` (per
        neuron, the smallest mask over the tasks so far).
    """
    p = state.params
    actor_m = masks_from_layers(p.actor, layer_masks["actor"] if target != "critic" else {})
    q_m = {n: masks_from_layers(p.q[n], layer_masks[n] if target != "actor" else {})
           for n in ("qf1", "qf2")}
    if policy == "min":
        actor_m = jax.tree.map(jnp.minimum, get_masks(state.opt.actor), actor_m)
        q_m = jax.tree.map(jnp.minimum, get_masks(state.opt.q), q_m)
    opt = state.opt._replace(actor=set_masks(state.opt.actor, actor_m),
                             q=set_masks(state.opt.q, q_m))
    return state._replace(opt=opt)
