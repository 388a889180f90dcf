"""Resets, baselines of plasticity: Shrink & Perturb (Ash & Adams 2020), ReDo (Sokar et al.
2023) and continual backprop, CBP (Dohare et al. 2024).

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

CBP replaces units by utility instead of dormancy. A unit's *contribution utility* on a batch
is ``mean_t |h_tj| * sum |w_out_j|`` (its mean absolute activation times the summed magnitude
of its outgoing weights); each unit keeps a running mean ``u <- eta u + (1 - eta) utility``
and an age (gradient steps since its last initialisation). Units older than the maturity
threshold ``m`` are eligible; per layer, ``rho * (mature units)`` replacements accrue per
gradient step (fractions carry over), and the eligible units of lowest bias-corrected utility
``u / (1 - eta^age)`` are reinitialised as ReDo does (fresh incoming weights, zero outgoing
weights, zero Adam moments), with utility and age reset to 0. :func:`cbp_step` covers
``steps`` gradient steps at once, with one batch's utility for all of them (the training
loop calls it once per chunk of updates), so that the count of replacements stays exact
while the utility is measured once per chunk.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.method.plasticity import unit_activity

__all__ = ["CBPState", "cbp_init", "cbp_step", "contribution_utility", "dormant_units",
           "redo", "reset_adam_moments", "shrink_perturb"]


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


def _outgoing_rows(kernel: jax.Array, n: int) -> jax.Array:
    """Per unit ``j`` of a layer with ``n`` units, the summed ``|w|`` of the rows (or, for a
    conv kernel ``[kh, kw, n, out]``, the input channel) of ``kernel`` that read it: ``[n]``."""
    if kernel.ndim == 4:
        return jnp.abs(kernel).sum(axis=(0, 1, 3))
    per_row = jnp.abs(kernel).sum(axis=1)
    return per_row.reshape(-1, n).sum(0)  # rows r with r % n == j


def contribution_utility(layer_acts: dict, valid: jax.Array, params: dict) -> dict:
    """CBP's contribution utility ``{layer: [N]}`` of one network's hidden units on a batch.

    Args:
      layer_acts: ``{layer: [T, N]}`` hidden activations, in forward order.
      valid: bool ``[T]``.
      params: the network's variables ``{'params': {layer: {'kernel', 'bias'}}}``.

    Returns:
      ``mean_t |h_tj| * sum |w_out_j|`` per unit (the outgoing weights of the last hidden
      layer are its output heads').
    """
    top = params["params"]
    hidden = list(layer_acts)
    w = valid.astype(jnp.float32)[:, None]
    out = {}
    for layer, a in layer_acts.items():
        n = a.shape[-1]
        mean_abs = (jnp.abs(a) * w).sum(0) / jnp.maximum(w.sum(), 1.0)
        outgoing = sum(_outgoing_rows(top[nxt]["kernel"], n)
                       for nxt in _next_layer(hidden, layer, top))
        out[layer] = mean_abs * outgoing
    return out


class CBPState(NamedTuple):
    """One network's CBP statistics: per hidden layer, the running utility ``[N]``, the age
    in gradient steps ``[N]`` and the fractional replacements owed (a scalar)."""

    util: dict
    age: dict
    owed: dict


def cbp_init(widths: dict) -> CBPState:
    """Zero statistics for hidden layers of ``widths`` (``{layer: N}``)."""
    return CBPState(util={k: jnp.zeros(n) for k, n in widths.items()},
                    age={k: jnp.zeros(n, jnp.int32) for k, n in widths.items()},
                    owed={k: jnp.zeros(()) for k in widths})


def cbp_step(params: dict, fresh: dict, cbp: CBPState, utility: dict, steps: int,
             decay: float, rate: float, maturity: int) -> tuple[dict, dict, CBPState, dict]:
    """``steps`` gradient steps of CBP's generate-and-test on one network.

    Args:
      params, fresh: the network's variables and a new initialisation of it.
      cbp: its statistics before these steps.
      utility: ``{layer: [N]}`` this batch's :func:`contribution_utility`, in forward order.
      steps: gradient steps covered (a Python int).
      decay: the utility's running-mean factor ``eta`` per step (CBP: 0.99).
      rate: the replacement rate ``rho``, replacements per mature unit per step (1e-4).
      maturity: the age in gradient steps above which a unit may be replaced.

    Returns:
      ``(params, touched, cbp, replaced)``: the new variables, which entries were
      reinitialised or zeroed (for :func:`reset_adam_moments`), the new statistics and
      ``{layer: bool [N]}`` the units replaced.
    """
    keep = decay ** steps
    util, age, owed, replaced = {}, {}, {}, {}
    for layer, u in utility.items():
        util[layer] = keep * cbp.util[layer] + (1.0 - keep) * u
        age[layer] = cbp.age[layer] + steps
        mature = age[layer] > maturity
        due = cbp.owed[layer] + rate * steps * mature.sum()
        count = jnp.minimum(jnp.floor(due), mature.sum())
        owed[layer] = due - count
        # Bias-corrected running mean: a unit's utility over its own lifetime.
        corrected = util[layer] / (1.0 - decay ** age[layer].astype(jnp.float32))
        order = jnp.argsort(jnp.where(mature, corrected, jnp.inf))
        rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
        replaced[layer] = mature & (rank < count)
        util[layer] = jnp.where(replaced[layer], 0.0, util[layer])
        age[layer] = jnp.where(replaced[layer], 0, age[layer])
    new, touched = redo(params, fresh, replaced)
    return new, touched, CBPState(util, age, owed), replaced


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
