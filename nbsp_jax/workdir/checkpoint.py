"""Orbax checkpoints of a whole run: device state (params, optimizer states with masks,
temperature, both replay buffers, PRNG keys) plus host state (counters, rows of the sr matrix,
running episode statistics, the NumPy RNG, the neuron record) in ``DIR/checkpoints/``.

A checkpoint is written at the end of every phase and every ``checkpoint_every_s`` seconds, only
after the values it holds were checked finite, so the latest checkpoint is always a good one.
"""

from __future__ import annotations

import dataclasses
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


def _committed(x) -> bool:
    return isinstance(x, jax.Array) and x.committed


def _place_like(template, x):
    # A NumPy template leaf stays NumPy; a committed one gets the template's sharding; an
    # uncommitted one is put uncommitted on the default device.
    if not isinstance(template, jax.Array):
        return x
    if template.committed:
        return x if isinstance(x, jax.Array) else jax.device_put(x, template.sharding)
    return jax.device_put(x)


def _unflatten_checked(template, leaves: list[np.ndarray]):
    want = jax.tree.leaves(template)
    for k, (t, x) in enumerate(zip(want, leaves, strict=True)):
        if (x.shape, x.dtype) != (t.shape, t.dtype):
            raise ValueError(f"checkpoint leaf {k} is {x.dtype}{list(x.shape)}, the run "
                             f"expects {t.dtype}{list(t.shape)}")
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


class _LocalArraysHandler(ocp.CheckpointHandler):
    """Writes a flat list of NumPy arrays to ``arrays.npz``, on whichever process saves.

    Orbax's own array handlers write NumPy arrays on process 0 only and refuse arrays local to
    one process in a multi-process run: a process-local checkpoint of process 1 would hold no
    data. This handler keeps orbax's step management and atomic directories around a plain file.
    """

    def save(self, directory, args: _LocalArrays) -> None:
        np.savez(os.fspath(directory / "arrays.npz"),
                 **{f"leaf_{k:06d}": x for k, x in enumerate(args.leaves)})

    def restore(self, directory, args: _LocalArrays | None = None) -> list[np.ndarray]:
        with np.load(os.fspath(directory / "arrays.npz")) as f:
            return [f[f"leaf_{k:06d}"] for k in range(len(f.files))]


@ocp.args.register_with_handler(_LocalArraysHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class _LocalArrays(ocp.args.CheckpointArgs):
    """The leaves of the device tree in ``jax.tree.leaves`` order (empty to restore)."""

    leaves: list = dataclasses.field(default_factory=list)


class Checkpointer:
    """Saves and restores ``(device_tree, host_dict)`` pairs under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, max_to_keep: int = 2, process_local: bool = False):
        """``process_local``: in a multi-process run, this process saves its own arrays to its
        own ``workdir`` on its own schedule (no barriers with the other processes)."""
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = {"max_to_keep": max_to_keep, "create": True}
        self._process_local = process_local
        handlers = None  # orbax's, chosen from the save arguments
        if process_local:
            i = jax.process_index()
            os.makedirs(self.directory, exist_ok=True)  # orbax: no create= with active_processes
            # Orbax's setup for local storage: every process is a primary host of its own files
            # (primary_host=None, only itself active), and its save signals are keyed by process
            # (per-process directory creation). With shared keys (each process counts its saves
            # from 1), one process's finished save deleted the signals that another's save was
            # waiting for: a hang, or a half-written step.
            mp = ocp.options.MultiprocessingOptions(
                primary_host=None, active_processes={i}, barrier_sync_key_prefix=f"process_{i}")
            options.update(create=False, enable_per_process_directory_creation=True,
                           multiprocessing_options=mp)
            handlers = {"device": _LocalArraysHandler(),
                        "host": ocp.JsonCheckpointHandler(multiprocessing_options=mp)}
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(**options),
            item_handlers=handlers)

    def latest_step(self) -> int | None:
        """The number of the latest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, device_tree: Any, host: dict) -> None:
        """Writes checkpoint ``step`` (blocking until it is on disk)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                device=self._device_args(_unwrap_keys(device_tree)),
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
        if self._process_local:  # NumPy leaves, placed below
            out = self._manager.restore(step, args=ocp.args.Composite(
                device=_LocalArrays(), host=ocp.args.JsonRestore()))
            device = _unflatten_checked(template, out["device"])
        else:  # committed leaves straight to their devices, the others to host memory
            abstract = jax.tree.map(
                lambda x: ocp.utils.to_shape_dtype_struct(x) if _committed(x)
                else np.empty(x.shape, x.dtype), template)
            out = self._manager.restore(step, args=ocp.args.Composite(
                device=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()))
            device = out["device"]
        device = jax.tree.map(_place_like, template, device)
        return _rewrap_keys(device_template, device), out["host"]

    def _device_args(self, tree: Any) -> ocp.args.CheckpointArgs:
        if self._process_local:
            return _LocalArrays(jax.tree.leaves(jax.device_get(tree)))
        return ocp.args.StandardSave(tree)

    def size_bytes(self, step: int) -> int:
        """Bytes on disk of checkpoint ``step``."""
        root = os.path.join(self.directory, str(step))
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

