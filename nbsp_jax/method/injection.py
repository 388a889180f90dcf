"""Plasticity injection (Nikishin et al. 2024), a baseline of the paper's Table 1: which
parameters of an :class:`nbsp_jax.networks.Injected` network train.

Before the first injection only ``base`` trains; at injection ``k`` (the switch to the task
after ``k + 1`` finished ones) ``base`` and every earlier ``new_j`` freeze and ``new_k``
starts training; ``init_k`` never trains. The masks are ``masked_scale``'s (chain it after
the optimizer: a frozen parameter then moves exactly 0), so injecting changes mask values,
not shapes, and nothing recompiles.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

from nbsp_jax.method.masking import MASK_DTYPE, _key_name, _unit_shape

__all__ = ["injection_masks"]

_PART = re.compile(r"^(base|new(\d+)|init(\d+))$")


def injection_masks(params: Any, active: jax.Array) -> Any:
    """Masks that train one part of an injected network and freeze the others.

    Args:
      params: parameters holding :class:`~nbsp_jax.networks.Injected` networks (their parts
        ``base``, ``new{k}``, ``init{k}`` anywhere in the path, e.g. ``{'qf1': {'params':
        {'base': ...}}}``).
      active: int scalar (may be traced): ``-1`` trains ``base``, ``k >= 0`` trains ``new{k}``.

    Returns:
      A masks tree for ``set_masks`` (float32 ``[N]`` per leaf): ones on the active part,
      zeros elsewhere (leaves outside any part keep ones).

    Raises:
      ValueError: if no leaf belongs to an injected network.
    """
    found = []

    def mask(path, leaf):
        ones = jnp.ones(_unit_shape(leaf), MASK_DTYPE)
        for key in path:
            m = _PART.match(_key_name(key))
            if m is None:
                continue
            found.append(True)
            if m.group(1) == "base":
                return ones * (active < 0)
            if m.group(2) is not None:
                return ones * (active == int(m.group(2)))
            return ones * 0.0  # init{k}: the frozen copy
        return ones

    out = jax.tree_util.tree_map_with_path(mask, params)
    if not found:
        raise ValueError("injection_masks: no 'base'/'new<k>'/'init<k>' part in these params; "
                         "build the networks with networks.Injected")
    return out
