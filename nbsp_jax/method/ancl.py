"""Auxiliary Network Continual Learning (ANCL; Kim et al. 2023) on EWC, a baseline of the
paper's Table 1, as an optax transform.

For each task ``t`` after the first, ANCL first trains an auxiliary copy of the network on
task ``t`` alone, with no penalty, to ``theta_aux`` (a solution that is plastic for the new
task), takes that network's diagonal Fisher ``F_aux`` on the task, and then trains the main
network with two quadratic pulls:

    L_t(theta) + lam / 2 * sum F (theta - theta*)^2 + lam_a / 2 * sum F_aux (theta - theta_aux)^2

The first is EWC's toward the earlier tasks (:func:`nbsp_jax.method.ewc`); the second, toward
the auxiliary network, is :func:`aux_anchor`: it adds ``lam_a * (F_aux * theta - F_aux *
theta_aux)`` to the gradient. A-EWC, the paper's form, is
``optax.chain(ewc(lam), aux_anchor(lam_a), optax.adam(lr))``. Unlike EWC's sums, the
auxiliary anchor holds only the current task's auxiliary network: :func:`set_aux_anchor`
replaces it. Installing it changes values, not shapes, so a jitted step does not recompile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

from nbsp_jax.method.ewc import add_anchor, quadratic_pull
from nbsp_jax.method.masking import find_state

__all__ = ["AuxAnchorState", "aux_anchor", "get_aux_anchor", "set_aux_anchor"]


class AuxAnchorState(NamedTuple):
    """The auxiliary pull's terms, each with the structure of the params: ``fisher`` =
    ``F_aux`` and ``anchored`` = ``F_aux * theta_aux``."""

    fisher: Any
    anchored: Any


def aux_anchor(strength: float) -> optax.GradientTransformation:
    """Adds ANCL's auxiliary pull ``strength * (fisher * params - anchored)`` to the updates.

    Args:
      strength: ``lambda_a`` of the auxiliary regulariser.

    Returns:
      An ``optax.GradientTransformation``; ``init`` starts at zero (no pull until
      :func:`set_aux_anchor` installs an auxiliary network); ``update`` needs ``params``.

    Example::

      tx = optax.chain(ewc(1e4), aux_anchor(10.0), optax.adam(1e-3))
      state = tx.init(params)
      state = set_aux_anchor(state, fisher_aux, params_aux)  # after the auxiliary training
    """
    return quadratic_pull(strength, AuxAnchorState, "aux_anchor")


def set_aux_anchor(opt_state: Any, fisher: Any, params: Any) -> Any:
    """Installs the auxiliary network of the current task into every :func:`aux_anchor`
    state of ``opt_state``, replacing the previous task's.

    Args:
      fisher: ``F_aux``, params-shaped (:func:`nbsp_jax.method.diagonal_fisher`).
      params: ``theta_aux``, the auxiliary network at the end of its training.

    Returns:
      ``opt_state`` with ``fisher = F_aux`` and ``anchored = F_aux * theta_aux``.
    """
    return add_anchor(opt_state, fisher, params, 0.0, AuxAnchorState)


def get_aux_anchor(opt_state: Any) -> AuxAnchorState:
    """The (first) :class:`AuxAnchorState` inside an optimizer state."""
    return find_state(opt_state, AuxAnchorState, "get_aux_anchor")
