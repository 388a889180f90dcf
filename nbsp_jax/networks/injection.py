"""Plasticity injection (Nikishin et al. 2024) as a Flax module option: a network with
``slots`` injections held in advance, so that injecting changes values, never shapes (no
recompilation)::

    f(x) = f_base(x) + sum_k (f_new_k(x) - f_init_k(x))

``init_k`` is a frozen copy of ``new_k``'s initial parameters (stored as a parameter
``init{k}`` and applied under ``stop_gradient``), so every term is exactly zero until ``new_k``
trains: injection ``k`` is only a change of which parameters train (before it ``base``, after
it ``new_k``; see :func:`nbsp_jax.method.injection_masks`), and the output is unchanged at the
moment of injection.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax


class Injected(nn.Module):
    """``net``'s function with ``slots`` plasticity injections held in advance.

    Attributes:
      net: the network (any Flax module; its outputs may be a tuple of arrays).
      slots: number of injections (a run of ``H`` tasks uses ``H - 1``).
      post: applied to the summed output (e.g. to clip a log-std back into its bounds).

    Parameters: ``base``, ``new{k}`` (submodules, recorded by ``capture_intermediates``) and
    ``init{k}`` (a frozen copy of ``new{k}``'s initial parameters).
    """

    net: nn.Module
    slots: int
    post: Callable | None = None

    @nn.compact
    def __call__(self, *args):
        out = self.net.clone(parent=self, name="base")(*args)
        for k in range(self.slots):
            new = self.net.clone(parent=self, name=f"new{k}")
            y = new(*args)
            frozen = self.param(f"init{k}", lambda _, m=new: jax.tree.map(lambda x: x,
                                                                        m.variables["params"]))
            y0 = self.net.clone(parent=None).apply(
                {"params": jax.lax.stop_gradient(frozen)}, *args)
            out = jax.tree.map(lambda o, a, b: o + (a - b), out, y, y0)
        return out if self.post is None else self.post(out)
