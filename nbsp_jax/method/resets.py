"""Resets, baselines of plasticity next to CBP: Shrink & Perturb (Ash & Adams 2020).

Shrink & Perturb moves every parameter part of the way back toward a fresh initialisation,

    theta <- shrink * theta + perturb * theta_fresh,     theta_fresh ~ the network's init,

at each task switch: shrinking keeps what was learned in direction, the fresh sample restores
the initial scale and diversity that a long-trained network loses. Pure and jittable: the
fresh parameters come in as a tree, drawn by the caller from the network's own initializer
(under ``jax.vmap`` every seed draws its own).
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["shrink_perturb"]


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
