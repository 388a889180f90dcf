"""Resets, baselines of plasticity next to CBP: Shrink & Perturb (Ash & Adams 2020) and
ReDo (Sokar et al. 2023).

Shrink & Perturb moves every parameter part of the way back toward a fresh initialisation,

    theta <- shrink * theta + perturb * theta_fresh,     theta_fresh ~ the network's init,

at each task switch: shrinking keeps what was learned in direction, the fresh sample restores
the initial scale and diversity that a long-trained network loses. Pure and jittable: the
fresh parameters come in as a tree, drawn by the caller from the network's own initializer
(under ``jax.vmap`` every seed draws its own).

ReDo recycles dormant units: every few gradient steps, a unit whose normalised activity on a
batch is at most ``tau`` (:func:`nbsp_jax.method.plasticity.unit_activity`) gets fresh
incoming weights and bias, zero outgoing weights (so the network's output does not jump), and
zero Adam moments on both. A unit's outgoing weights are the rows ``r`` of the next layer's
kernel with ``r % N == j`` (``N`` units): that covers a Dense next layer (``r = j``), a CReLU
pair (``j`` and ``N + j``) and a conv layer flattened into a Dense one (``(h, w, c)`` order);
a next conv layer reads channel ``j`` on its input axis.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.method.plasticity import unit_activity

__all__ = ["dormant_units", "redo", "reset_adam_moments", "shrink_perturb"]


def shrink_perturb(params: Any, fresh: Any, shrink: float, perturb: float) -> Any:
    """``shrink * params + perturb * fresh``, leaf by leaf.

    Args:
      params: the trained parameters.
      fresh: a new initialisation of the same networks (same tree structure and shapes).
      shrink, perturb: the two coefficients (Ash & Adams' warm-start values 0.4 and 0.1;
        ``shrink = 1, perturb = 0`` is the identity).

    Returns:
      A tree like ``params``.
    """
    if jax.tree.structure(params) != jax.tree.structure(fresh):
        raise ValueError("shrink_perturb: params and fresh have different structures: "
                         f"{jax.tree.structure(params)} vs {jax.tree.structure(fresh)}")
    return jax.tree.map(lambda p, f: shrink * p + perturb * f, params, fresh)


def dormant_units(layer_acts: dict, valid: jax.Array, tau: float) -> dict:
    """``{layer: bool [N]}``: units with normalised activity ``s_i <= tau`` over the valid rows
    of ``layer_acts`` (``{layer: [T, N]}``)."""
    return {k: unit_activity(a, valid) <= tau for k, a in layer_acts.items()}


def _next_layer(hidden: list[str], layer: str, top: dict) -> list[str]:
    """The layers reading ``layer``'s output: the next hidden layer, or (after the last one)
    every non-hidden layer of the network (its output heads)."""
    i = hidden.index(layer)
    if i + 1 < len(hidden):
        return [hidden[i + 1]]
    return [k for k in top if k not in hidden]


def redo(params: dict, fresh: dict, dormant: dict) -> tuple[dict, dict]:
    """Recycles one network's ``dormant`` units.

    Args:
      params: the network's variables ``{'params': {layer: {'kernel', 'bias'}}}``.
      fresh: a new initialisation of the same network.
      dormant: ``{layer: bool [N]}`` for its hidden layers, in forward order (e.g.
        ``conv0 .. conv2, fc0, fc1`` or ``fc0, fc1``), from :func:`dormant_units`.

    Returns:
      The new variables, and a tree like ``params`` of bool leaves: which entries were reset
      (their Adam moments are then zeroed by :func:`reset_adam_moments`).
    """
    top = params["params"]
    hidden = list(dormant)
    new = {k: dict(v) for k, v in top.items()}
    touched = {k: {n: jnp.zeros(x.shape, bool) for n, x in v.items()} for k, v in top.items()}
    for layer, d in dormant.items():
        # Incoming weights and bias: the unit's last-axis slice, from the fresh init.
        for name, x in top[layer].items():
            hit = jnp.broadcast_to(d, x.shape)
            new[layer][name] = jnp.where(hit, fresh["params"][layer][name], new[layer][name])
            touched[layer][name] = touched[layer][name] | hit
        n = d.shape[0]
        for nxt in _next_layer(hidden, layer, top):
            k = new[nxt]["kernel"]
            if k.ndim == 4:  # a conv reading this layer's channels on its input axis
                rows = jnp.broadcast_to(d[None, None, :, None], k.shape)
            else:
                r = jnp.arange(k.shape[0]) % n
                rows = jnp.broadcast_to(d[r][:, None], k.shape)
            new[nxt]["kernel"] = jnp.where(rows, 0.0, k)
            touched[nxt]["kernel"] = touched[nxt]["kernel"] | rows
    return {"params": new}, {"params": touched}


def reset_adam_moments(opt_state: Any, touched: Any) -> Any:
    """Zeroes Adam's first and second moments where ``touched`` (a tree like the params) is
    True, in every ``optax.ScaleByAdamState`` inside ``opt_state``."""
    def reset(state):
        if not isinstance(state, optax.ScaleByAdamState):
            return state
        zero = lambda m: jax.tree.map(lambda x, t: jnp.where(t, 0.0, x), m, touched)
        return state._replace(mu=zero(state.mu), nu=zero(state.nu))

    return jax.tree.map(reset, opt_state,
                        is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
