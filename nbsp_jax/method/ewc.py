"""Elastic weight consolidation (Kirkpatrick et al. 2017) as an optax transform, a baseline of
the paper's Table 1.

After task ``t`` with parameters ``theta*_t`` and diagonal Fisher information ``F_t``, EWC adds
the penalty ``lam / 2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2`` to the loss. Its gradient,

    lam * sum_t F_t * (theta - theta*_t) = lam * (A * theta - B),
    A = sum_t F_t,  B = sum_t F_t * theta*_t,

needs only the two running sums, so every earlier task is kept exactly at the memory of two
copies of the parameters. Online EWC (Schwarz et al. 2018) decays the earlier tasks' terms by
``gamma`` at each new task: ``A <- gamma A + F_t``, ``B <- gamma B + F_t theta*_t``.

:func:`ewc` adds that gradient to the incoming one; put it *before* the optimizer
(``optax.chain(ewc(lam), optax.adam(lr))``): it is a term of the loss. The sums live in the
optimizer state, so consolidating after a task (:func:`consolidate`) changes values, not
shapes: a jitted step does not recompile, and under ``jax.vmap`` every seed has its own.
:func:`diagonal_fisher` estimates ``F`` as the mean squared per-example gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nbsp_jax.method.masking import find_state

__all__ = ["EWCState", "add_anchor", "consolidate", "diagonal_fisher", "ewc", "get_ewc",
           "quadratic_pull"]


class EWCState(NamedTuple):
    """The penalty's running sums, each with the structure of the params: ``fisher`` =
    ``sum_t F_t`` and ``anchored`` = ``sum_t F_t * theta*_t``."""

    fisher: Any
    anchored: Any


def ewc(strength: float) -> optax.GradientTransformation:
    """Adds EWC's penalty gradient ``strength * (fisher * params - anchored)`` to the updates.

    Args:
      strength: ``lambda`` of the penalty.

    Returns:
      An ``optax.GradientTransformation``; ``init`` starts both sums at zero (no penalty until
      :func:`consolidate` installs one); ``update`` needs ``params``.
    """
    return quadratic_pull(strength, EWCState, "ewc")


def quadratic_pull(strength: float, state_cls: type, name: str) -> optax.GradientTransformation:
    """The transform behind :func:`ewc` (and ANCL's :func:`nbsp_jax.method.aux_anchor`): adds
    ``strength * (fisher * params - anchored)``, the gradient of
    ``strength / 2 * sum fisher * (params - anchor)^2`` with ``anchored = fisher * anchor``,
    its two sums held in a ``state_cls(fisher, anchored)`` that starts at zero."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return state_cls(zeros, zeros)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(f"{name} needs params: call update(grads, state, params)")
        updates = jax.tree.map(lambda g, f, b, p: g + strength * (f * p - b), updates,
                               state.fisher, state.anchored, params)
        return updates, state

    return optax.GradientTransformation(init, update)


def get_ewc(opt_state: Any) -> EWCState:
    """The (first) :class:`EWCState` inside an optimizer state."""
    return find_state(opt_state, EWCState, "get_ewc")


def consolidate(opt_state: Any, fisher: Any, params: Any, decay: float = 1.0) -> Any:
    """Adds a finished task to the penalty inside ``opt_state`` (a chain holding :func:`ewc`).

    Args:
      opt_state: the optimizer state.
      fisher: that task's diagonal Fisher, params-shaped (:func:`diagonal_fisher`).
      params: the parameters at the end of that task (``theta*``).
      decay: ``gamma`` of online EWC; 1.0 keeps every earlier task at full weight (EWC).

    Returns:
      ``opt_state`` with ``fisher <- decay * fisher + F`` and
      ``anchored <- decay * anchored + F * params``.
    """
    return add_anchor(opt_state, fisher, params, decay, EWCState)


def add_anchor(opt_state: Any, fisher: Any, params: Any, decay: float, state_cls: type) -> Any:
    """:func:`consolidate` for the states of type ``state_cls`` (``decay = 0`` replaces the
    anchor instead of adding to it)."""
    is_state = lambda x: isinstance(x, state_cls)

    def new(state):
        if not is_state(state):
            return state
        return state_cls(
            jax.tree.map(lambda a, f: decay * a + f, state.fisher, fisher),
            jax.tree.map(lambda b, f, p: decay * b + f * p, state.anchored, fisher, params))

    return jax.tree.map(new, opt_state, is_leaf=is_state)


def diagonal_fisher(loss: Callable[[Any, Any], jax.Array], params: Any, examples: Any,
                    chunk: int = 64, weights: jax.Array | None = None) -> Any:
    """Empirical diagonal Fisher: the (weighted) mean over examples of the squared gradient of
    ``loss``.

    Args:
      loss: ``loss(params, example) -> scalar`` for one example (e.g. the negative
        log-likelihood of an action, or one transition's TD error squared).
      params: where to take the gradients.
      examples: a pytree whose leaves have a leading axis ``[T, ...]``.
      chunk: examples per vmapped gradient (bounds memory at ``chunk`` gradient copies). When
        ``T`` is not a multiple of it, the examples are padded with zero-weight copies.
      weights: optional ``[T]`` non-negative weights (e.g. 0 for the unfilled rows of a
        record); None weighs every example 1.

    Returns:
      A params-shaped tree: ``sum_t w_t (d loss(params, example_t) / d params)^2 / sum_t w_t``
      (zeros when every weight is 0).
    """
    T = jax.tree.leaves(examples)[0].shape[0]
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    w = jnp.ones((T,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    if w.shape != (T,):
        raise ValueError(f"weights have shape {w.shape}; expected ({T},) like the examples")
    pad = -T % chunk
    if pad:  # zero-weight copies of the first example fill the last chunk
        examples = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))]),
            examples)
        w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
    n = (T + pad) // chunk
    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0))

    def step(total, xs):
        batch, wb = xs
        grads = per_example(params, batch)
        return jax.tree.map(
            lambda t, g: t + jnp.tensordot(wb, g**2, axes=1).astype(t.dtype), total, grads), None

    batches = jax.tree.map(lambda x: x.reshape(n, chunk, *x.shape[1:]), examples)
    total, _ = jax.lax.scan(step, jax.tree.map(jnp.zeros_like, params),
                            (batches, w.reshape(n, chunk)))
    norm = jnp.maximum(w.sum(), 1e-12)
    return jax.tree.map(lambda t: t / norm, total)
