"""Recording the post-ReLU activations of a network's hidden layers (Flax
``capture_intermediates``)::

    params['params']['fc0']['kernel']   # (in, features)
    acts['fc0']                         # (T, features), post-ReLU, from record()

A conv layer's neuron is an output channel; its activation is the channel's mean over height
and width (:func:`channel_mean`). Output layers are plain Dense layers and never recorded: the
last layer of each network is not a neuron candidate (SPEC section 2).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from nbsp_jax.networks.layers import CReLUDense, ReLUConv, ReLUDense


def channel_mean(act: jax.Array) -> jax.Array:
    """Reduces a conv activation ``[T, H, W, C]`` (or any ``[T, ..., N]``) to ``[T, N]``."""
    act = jnp.asarray(act)
    if act.ndim < 2:
        raise ValueError(f"channel_mean: expected [T, ..., N], got shape {act.shape}")
    return act.reshape(act.shape[0], -1, act.shape[-1]).mean(axis=1)


def _is_candidate(module: nn.Module, method_name: str) -> bool:
    return isinstance(module, ReLUDense | CReLUDense | ReLUConv) and method_name == "__call__"


def record(module: nn.Module, params, *inputs) -> tuple[jax.Array, dict]:
    """Applies ``module`` and returns ``(outputs, activations)``.

    Uses Flax ``capture_intermediates`` restricted to the hidden :class:`ReLUDense` and
    :class:`ReLUConv` layers; a conv layer's neuron is a channel, its activation the channel's
    mean over height and width.

    Args:
      module: a network from this file.
      params: its variables ``{'params': ...}``.
      *inputs: the module's inputs, each with leading batch dims ``[T, ...]``.

    Returns:
      The module's output and a flat dict ``{layer_path: [T, units]}`` of post-ReLU
      activations (channel means for conv layers, ``|z|`` for CReLU); ``layer_path`` is the
      module path joined by ``/`` (e.g. ``'fc0'``), the same path as the layer's parameters.
    """
    out, state = module.apply(params, *inputs, capture_intermediates=_is_candidate)
    flat = flax.traverse_util.flatten_dict(state["intermediates"], sep="/")
    # Keys end in '/__call__'. ReLUDense.__call__ calls Dense.__call__ on the same module, so
    # each tuple holds (pre-ReLU, post-ReLU) in call-completion order: the last is ours.
    acts = {k.rsplit("/", 1)[0]: v[-1] for k, v in flat.items()}
    kernels = flax.traverse_util.flatten_dict(params["params"], sep="/")
    return out, {k: _per_unit(v, kernels[f"{k}/kernel"].shape[-1]) for k, v in acts.items()}


def _per_unit(act: jax.Array, units: int) -> jax.Array:
    """One activation per unit ``[T, units]``: conv channels as spatial means; a CReLU
    layer's pairs ``[relu(z), relu(-z)]`` (twice as many outputs as kernel columns, which a
    ReLU layer never has) as their sum ``|z|``."""
    if act.ndim > 2:
        return channel_mean(act)
    if act.shape[-1] == 2 * units:
        return act[..., :units] + act[..., units:]
    return act
