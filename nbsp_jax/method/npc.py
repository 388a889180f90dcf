"""Neuron-level plasticity control (NPC, Paik et al. 2019), a baseline of the paper's Table 1:
each neuron's importance is a running mean of its Taylor criterion (Molchanov et al. 2017),
``|mean over the batch of a * dL/da|`` for its activation ``a``, normalised per layer, and an
important neuron gets a lower learning rate.

The criterion needs no activation gradients: for a layer ``z = x W + b``, ``a = phi(z)`` with a
positively homogeneous ``phi`` (ReLU, CReLU: ``phi(z) = phi'(z) z``),

    sum_m a_m dL/da_m = sum_m z_m dL/dz_m = sum_j W_ji dL/dW_ji + b_i dL/db_i,

so it is the sum of ``theta * grad`` over the neuron's incoming parameters (its kernel column
and bias; a conv channel's whole filter), exactly, from the gradient the optimizer already
receives. :func:`npc_importance` is an optax transform that accumulates it and passes the
updates on unchanged; put it first, where the updates are the loss's gradient
(``optax.chain(npc_importance(), optax.adam(lr), masked_scale())``). At a task's end
:func:`npc_scales` turns the importance into per-neuron learning-rate factors
``max(0, 1 - C / c_max)``, which ``masked_scale`` applies from then on (the same machinery as
NBSP's masks, with importance instead of goal scores).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.method.masking import MASK_DTYPE, _leaf_modules, _unit_shape, find_state

__all__ = ["NPCState", "get_npc", "npc_importance", "npc_scales", "taylor_importance"]


class NPCState(NamedTuple):
    """``importance``: the running mean of the normalised Taylor criterion, one vector
    ``[N]`` per parameter leaf (the leaves of one layer share it), like ``masked_scale``'s
    masks; ``count``: the number of updates seen (for the running mean's bias correction)."""

    importance: Any
    count: jax.Array


def taylor_importance(params: Any, grads: Any, eps: float = 1e-12) -> Any:
    """Per-neuron Taylor criterion ``|sum of theta * grad over the neuron's parameters|``,
    divided by its layer's root mean square (each layer then has mean square 1, whatever its
    width or gradient scale; Molchanov et al.'s per-layer l2 normalisation, scaled by
    ``sqrt(N)``).

    Args:
      params, grads: trees of the same structure (a Flax param dict, with or without the
        outer ``'params'`` key). A layer is the module owning leaves (its kernel and bias); its
        neurons are the leaves' last axis.

    Returns:
      A tree with the structure of ``params``: each leaf a float32 ``[N]`` vector (shape ``()``
      for a scalar leaf), the same vector for every leaf of one layer.
    """
    modules = _leaf_modules(params)
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    g_leaves = jax.tree_util.tree_leaves(grads)
    total: dict[str, jax.Array] = {}
    for (_, module), p, g in zip(modules, p_leaves, g_leaves, strict=True):
        pg = (jnp.asarray(p, jnp.float32) * jnp.asarray(g, jnp.float32))
        unit = pg.reshape(-1, *_unit_shape(p)).sum(axis=0) if pg.ndim else pg
        total[module] = total.get(module, 0.0) + unit
    norm = {m: jnp.abs(c) / (jnp.sqrt(jnp.mean(jnp.square(c))) + eps) for m, c in total.items()}
    return jax.tree_util.tree_unflatten(treedef, [norm[m].astype(MASK_DTYPE)
                                                  for _, m in modules])


def npc_importance(decay: float = 0.999) -> optax.GradientTransformation:
    """Accumulates each neuron's importance (:func:`taylor_importance` of the incoming
    gradient) as an exponential running mean; the updates pass through unchanged.

    Args:
      decay: weight of the past in the running mean (``C <- decay C + (1 - decay) c``).

    Returns:
      An ``optax.GradientTransformation``; ``init`` starts at zero importance, ``update``
      needs ``params`` and must see the loss's gradient (chain it before the optimizer).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"npc_importance: decay must lie in [0, 1), got {decay!r}")

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(_unit_shape(p), MASK_DTYPE), params)
        return NPCState(zeros, jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("npc_importance needs params: call update(grads, state, params)")
        c = taylor_importance(params, updates)
        imp = jax.tree.map(lambda m, x: decay * m + (1.0 - decay) * x, state.importance, c)
        return updates, NPCState(imp, state.count + 1)

    return optax.GradientTransformation(init, update)


def get_npc(opt_state: Any) -> NPCState:
    """The (first) :class:`NPCState` inside an optimizer state."""
    return find_state(opt_state, NPCState, "get_npc")


def npc_scales(state: NPCState, decay: float, c_max: float) -> Any:
    """Per-neuron learning-rate factors ``max(0, 1 - C / c_max)`` from the bias-corrected
    running mean ``C = importance / (1 - decay ** count)``: a neuron at the layer's root mean
    square importance (1) keeps ``1 - 1 / c_max`` of its step, one at ``c_max`` or above is
    frozen. Returns a masks tree (the structure of ``state.importance``) for ``set_masks``."""
    if not c_max > 0:
        raise ValueError(f"npc_scales: c_max must be > 0, got {c_max!r}")
    correction = 1.0 - jnp.power(jnp.float32(decay), state.count.astype(jnp.float32))
    return jax.tree.map(
        lambda c: jnp.clip(1.0 - c / (jnp.maximum(correction, 1e-12) * c_max), 0.0, 1.0),
        state.importance)
