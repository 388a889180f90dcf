"""Orbax checkpoints of a whole run: device state (params, optimizer states with masks,
temperature, both replay buffers, PRNG keys) plus host state (counters, rows of the sr matrix,
running episode statistics, the NumPy RNG, the neuron record) in ``DIR/checkpoints/``.

A checkpoint is written at the end of every phase and every ``checkpoint_every_s`` seconds, only
after the values it holds were checked finite, so the latest checkpoint is always a good one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree):
    # Typed PRNG keys are stored as their raw uint32 data.
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _rewrap_keys(template, tree):
    return jax.tree.map(lambda t, x: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
                        if _is_key(t) else x,
                        template, tree)


class Checkpointer:
    """Saves and restores ``(device_tree, host_dict)`` pairs under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 2, process_local: bool = False):
        """``process_local``: in a multi-process run, this process saves its own arrays to its
        own ``workdir`` on its own schedule (no barriers with the other processes)."""
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = {"max_to_keep": max_to_keep, "create": True}
        if process_local:
            i = jax.process_index()
            os.makedirs(self.directory, exist_ok=True)  # orbax: no create= with active_processes
            options.update(create=False, multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=i, active_processes={i}, barrier_sync_key_prefix=f"process_{i}"))
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(**options))
        # Orbax refuses process-local jax.Arrays in a multi-process run: save NumPy copies.
        self._host_arrays = process_local

    def latest_step(self) -> int | None:
        """The number of the latest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, device_tree: Any, host: dict) -> None:
        """Writes checkpoint ``step`` (blocking until it is on disk)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                device=ocp.args.StandardSave(self._to_saved(device_tree)),
                host=ocp.args.JsonSave(host),
            ),
        )
        # Blocking: a checkpoint that is still being written when the process is killed would
        # not be the "last good" one.
        self._manager.wait_until_finished()

    def restore(self, step: int, device_template: Any) -> tuple[Any, dict]:
        """Reads checkpoint ``step`` into the structure, shapes, dtypes and placement of
        ``device_template``; returns ``(device_tree, host_dict)``.

        A leaf committed to its devices (a seed-sharded run's arrays) comes back with the
        template's sharding; an uncommitted one (what ``jnp`` and ``jit`` make without a mesh)
        comes back uncommitted on the default device. Placement is part of every jitted
        function's signature: committed arrays restored into a run of uncommitted ones would
        compile each function a second time once fresh arrays (the next task's buffer) join them.
        """
        template = _unwrap_keys(device_template)
        # Leaves read to host memory, then put uncommitted on the default device.
        loose = jax.tree.map(lambda x: isinstance(x, jax.Array)
                             and (self._host_arrays or not x.committed), template)
        abstract = jax.tree.map(lambda x, h: np.empty(x.shape, x.dtype) if h
                                else ocp.utils.to_shape_dtype_struct(x), template, loose)
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                device=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()
            ),
        )
        device = jax.tree.map(lambda x, h: jax.device_put(x) if h else x, out["device"], loose)
        return _rewrap_keys(device_template, device), out["host"]

    def _to_saved(self, device_tree: Any) -> Any:
        tree = _unwrap_keys(device_tree)
        return jax.device_get(tree) if self._host_arrays else tree

    def size_bytes(self, step: int) -> int:
        """Bytes on disk of checkpoint ``step``."""
        root = os.path.join(self.directory, str(step))
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

