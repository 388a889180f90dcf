"""Plasticity metrics of a network at a task's end, from its recorded hidden activations:
dormant units (Sokar et al. 2023), the effective rank of the last hidden layer's features
(Kumar et al. 2021), and parameter norms. Every function is for one seed and jittable.

Definitions (activations ``a [T, N]`` of a layer over the valid recorded steps):

- a unit's normalised activity ``s_i = mean_t |a_ti| / mean_j mean_t |a_tj|`` (ReDo); it is
  *tau-dormant* when ``s_i <= tau``. ``tau = 0`` counts units that never fire (dead ReLUs),
  ``tau = 0.1`` ReDo's threshold. Reported as the fraction of the network's hidden units.
- ``srank_delta(Phi)``: the fewest singular values of the feature matrix ``Phi [T, N]`` that
  hold ``1 - delta`` of their sum (``delta = 0.01``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The dormant thresholds reported (tau), as names of the metrics.
DORMANT_TAUS = {"dormant_0": 0.0, "dormant_0.1": 0.1}
SRANK_DELTA = 0.01


def unit_activity(act: jax.Array, valid: jax.Array) -> jax.Array:
    """``s_i`` of each unit ``[N]`` from ``act [T, N]`` over the rows with ``valid [T]``."""
    w = valid.astype(act.dtype)[:, None]
    mean_abs = (jnp.abs(act) * w).sum(0) / jnp.maximum(w.sum(), 1.0)
    return mean_abs / jnp.maximum(mean_abs.mean(), 1e-12)


def dormant_fraction(layer_acts: dict, valid: jax.Array, tau: float) -> jax.Array:
    """Fraction of all units of ``layer_acts`` (``{layer: [T, N]}``) with ``s_i <= tau``."""
    flags = [unit_activity(a, valid) <= tau for a in layer_acts.values()]
    return jnp.concatenate(flags).mean()


def feature_srank(features: jax.Array, valid: jax.Array, delta: float = SRANK_DELTA):
    """``srank_delta`` of ``features [T, N]`` over the valid rows (int32 scalar); zeroed rows
    leave the singular values unchanged."""
    phi = features * valid.astype(features.dtype)[:, None]
    sv = jnp.linalg.svd(phi, compute_uv=False)
    cum = jnp.cumsum(sv) / jnp.maximum(sv.sum(), 1e-12)
    return (jnp.sum(cum < 1.0 - delta) + 1).astype(jnp.int32)


def feature_gram(features: jax.Array, valid: jax.Array) -> jax.Array:
    """``Phi^T Phi [N, N]`` over the valid rows of ``features [T, N]``: its eigenvalues are the
    squared singular values of ``Phi``, so :func:`srank_from_gram` gives ``srank`` from it on
    the host."""
    phi = features * valid.astype(features.dtype)[:, None]
    return phi.T @ phi


def srank_from_gram(gram, delta: float = SRANK_DELTA) -> np.ndarray:
    """``srank_delta`` from Gram matrices ``[..., N, N]`` (numpy, float64 eigenvalues): int
    ``[...]``. The training loop takes this path, because a LAPACK SVD inside a computation
    split over several CPU devices (``shard_map``) was seen to hang."""
    eig = np.linalg.eigvalsh(np.asarray(gram, np.float64))
    sv = np.sqrt(np.clip(eig, 0.0, None))[..., ::-1]
    cum = np.cumsum(sv, axis=-1) / np.maximum(sv.sum(-1, keepdims=True), 1e-12)
    return (np.sum(cum < 1.0 - delta, axis=-1) + 1).astype(np.int64)


def tree_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves of ``tree`` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def forward_order(names) -> list[str]:
    """Hidden layer names in forward order: ``conv<j>`` by ``j``, then ``fc<i>`` by ``i``.

    Nested names (``'<part>/fc<i>'``, the parts of a plasticity-injected network) are ordered
    by part, then within it; the last name is then the last part's last layer."""
    def order(name: str):
        prefix, _, leaf = name.rpartition("/")
        digits = "".join(ch for ch in leaf if ch.isdigit())
        return (prefix, leaf.startswith("fc"), int(digits) if digits else 0)

    return sorted(names, key=order)


def last_hidden(layer_acts: dict) -> str:
    """The name of a network's last hidden layer (the last of :func:`forward_order`)."""
    return forward_order(layer_acts)[-1]


def plasticity_metrics(acts: dict, valid: jax.Array, params: dict,
                       srank: str = "svd") -> dict:
    """Per network: the dormant fractions of :data:`DORMANT_TAUS`, the last hidden layer's
    ``feature_srank`` and ``param_norm``.

    Args:
      acts: ``{net: {layer: [T, N]}}`` (:func:`nbsp_jax.method.record_networks`).
      valid: bool ``[T]``.
      params: ``{net: params}``, the same networks.
      srank: ``'svd'`` computes ``feature_srank`` here; ``'gram'`` returns the last hidden
        layer's ``feature_gram [N, N]`` instead, for :func:`srank_from_gram` on the host.

    Returns:
      ``{net: {metric: scalar}}`` (``feature_gram``: ``[N, N]``).
    """
    if srank not in ("svd", "gram"):
        raise ValueError(f"unknown srank {srank!r}; valid choices: ('svd', 'gram')")
    out = {}
    for net, layer_acts in acts.items():
        m = {name: dormant_fraction(layer_acts, valid, tau)
             for name, tau in DORMANT_TAUS.items()}
        last = layer_acts[last_hidden(layer_acts)]
        if srank == "svd":
            m["feature_srank"] = feature_srank(last, valid)
        else:
            m["feature_gram"] = feature_gram(last, valid)
        m["param_norm"] = tree_norm(params[net])
        out[net] = m
    return out
