"""Sharding the seed axis over devices, and multi-host start-up.

Every device-side array of the training loop carries a leading seed axis ``[S, ...]`` and the
seeds never talk to each other, so the run scales by splitting that axis over devices: a 1-D
:class:`jax.sharding.Mesh` with one axis named ``'seeds'`` and the ``NamedSharding``
``PartitionSpec('seeds')``. The jitted, seed-vmapped learner functions need no change: handed
seed-sharded inputs, XLA's partitioner (GSPMD) splits a ``jax.vmap``-ed function along the seed
axis (each device computes its own ``S / num_devices`` seeds, with no communication) and returns
seed-sharded outputs. A ``lax.map`` over seeds (``seed_axis='map'``) is *not* split that way: the
partitioner gathers the seeds and every device computes all of them; wrap such functions with
:func:`seed_parallel` (``shard_map``), which runs any seed-batched function on each device's
block of seeds. Host data entering a jitted call (observations, ``active`` flags, ``step0``) may
stay NumPy or uncommitted arrays (``jnp.asarray``); ``jit`` moves it to where the sharded
arguments are. Arrays *committed* to one device (outputs of a jitted call on unsharded inputs,
restored checkpoints) must be passed through :func:`shard_seeds` first, or ``jit`` refuses to mix
them with seed-sharded ones.

Values: the partitioned program is compiled separately and XLA may round differently (e.g.
Adam's bias correction as a division instead of a multiplication by a reciprocal), so
``jax.vmap``-ed updates agree with the single-device run to float32 rounding per step, and Adam
amplifies that over many steps (as it does for any recompilation). ``lax.map`` under
:func:`seed_parallel` compiles the same per-seed program and gives bitwise-equal results.

Multi-host: :func:`maybe_initialize_distributed` starts ``jax.distributed`` when a
multi-process launch is detected. The training loop then runs each process's contiguous block
of seeds (process ``i`` of ``P``: seeds ``i * S / P`` onwards) as a run of its own on its local
devices, and gathers the results with :func:`allgather_json` (:mod:`nbsp_jax.training.loop`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "SEED_AXIS",
    "allgather_json",
    "check_divisible",
    "distributed_config",
    "is_seed_sharded",
    "maybe_initialize_distributed",
    "replicated",
    "seed_mesh",
    "seed_parallel",
    "seed_sharding",
    "shard_seeds",
    "valid_num_seeds",
]

SEED_AXIS = "seeds"


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with one axis ``'seeds'``.

    Args:
      devices: the devices to split the seeds over; default ``jax.devices()``, i.e. all devices
        of all processes (only the local ones in a single-process run).

    Returns:
      ``Mesh`` of shape ``(len(devices),)``. Devices are ordered by (process, id), so each
      process owns one contiguous block of seeds.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("seed_mesh: no devices given")
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices, dtype=object), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, PartitionSpec('seeds'))``: the leading axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, PartitionSpec())``: a full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def valid_num_seeds(num_devices: int, count: int = 3) -> tuple[int, ...]:
    """The first ``count`` seed counts that split evenly: ``(n, 2n, 3n, ...)``."""
    return tuple(num_devices * i for i in range(1, count + 1))


def _not_divisible(num_seeds: int, num_devices: int, where: str = "") -> ValueError:
    choices = ", ".join(map(str, valid_num_seeds(num_devices))) + ", ..."
    return ValueError(
        f"{where}num_seeds={num_seeds} is not a multiple of the {num_devices} devices; use "
        f"num_seeds in ({choices}) or --config.shard_seeds=False"
    )


def check_divisible(num_seeds: int, mesh: Mesh) -> None:
    """Raises ValueError, naming valid choices, unless ``num_seeds`` splits evenly over
    ``mesh``. Cheap: call it before building anything."""
    n = mesh.devices.size
    if num_seeds <= 0:
        raise ValueError(f"num_seeds={num_seeds} must be positive")
    if num_seeds % n:
        raise _not_divisible(num_seeds, n)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Places every array leaf of ``tree`` with its leading (seed) axis split over ``mesh``.

    Args:
      tree: a pytree whose leaves are ``[S, ...]`` arrays (jax or NumPy; typed PRNG key arrays
        included) or scalars. All leaves with a leading axis must have it be the seed axis: do
        not pass arrays laid out ``[T, S, ...]``.
      mesh: from :func:`seed_mesh`.

    Returns:
      The same tree; leaves of rank >= 1 are ``jax.Array``s with sharding
      :func:`seed_sharding` (each device holds ``[S / num_devices, ...]``), rank-0 leaves are
      replicated on every device. Values are unchanged.

    Raises:
      ValueError: a leaf's leading axis is not a multiple of the number of devices (the
        message names the leaf, ``num_seeds``, the device count and valid choices).
    """
    n = mesh.devices.size
    split, full = seed_sharding(mesh), replicated(mesh)

    def place(path, x):
        if np.ndim(x) == 0:
            return jax.device_put(x, full)
        if np.shape(x)[0] % n:
            raise _not_divisible(np.shape(x)[0], n, f"leaf {jax.tree_util.keystr(path)}: ")
        return jax.device_put(x, split)

    return jax.tree_util.tree_map_with_path(place, tree)


def is_seed_sharded(x: jax.Array, mesh: Mesh) -> bool:
    """True if ``x`` (rank >= 1) is split along its leading axis over all devices of ``mesh``."""
    return x.sharding.is_equivalent_to(seed_sharding(mesh), x.ndim)


def seed_parallel(fn: Callable, mesh: Mesh, in_axes: Sequence[int | None]) -> Callable:
    """Runs a seed-batched function on each device's block of seeds (``jax.shard_map``).

    Args:
      fn: a function of positional arguments whose ``in_axes == 0`` arguments (pytrees) carry a
        leading seed axis ``[S, ...]`` and the others are the same for every seed, returning a
        pytree whose every leaf has a leading seed axis, e.g. ``jax.vmap(f, in_axes)`` or
        ``cycle.over_seeds(f, 'map', in_axes)``.
      mesh: from :func:`seed_mesh`.
      in_axes: per positional argument, ``0`` (seed-batched) or ``None`` (replicated).

    Returns:
      A function with the signature of ``fn`` (jit it as usual); each device calls ``fn`` on its
      ``[S / num_devices, ...]`` block, with no communication between devices, and every output
      leaf is ``[S, ...]`` with :func:`seed_sharding`.
    """
    if any(ax not in (0, None) for ax in in_axes):
        raise ValueError(f"in_axes must be 0 or None per argument, got {tuple(in_axes)}")
    specs = tuple(PartitionSpec(SEED_AXIS) if ax == 0 else PartitionSpec() for ax in in_axes)
    # check_vma=False: scans inside fn may start from seed-invariant carries (zeros) that become
    # seed-dependent; every output is declared seed-sharded, so nothing needs to be invariant.
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(SEED_AXIS),
                         check_vma=False)


def allgather_json(obj: Any) -> list:
    """Every process's ``obj`` (JSON-serialisable), in process order, in every process.

    A collective (every process must call it): the JSON text travels as padded uint8 arrays
    through ``multihost_utils.process_allgather``. In a single process: ``[obj]``.
    """
    if jax.process_count() == 1:
        return [json.loads(json.dumps(obj))]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    blobs = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(b[: int(n)]).decode()) for b, n in zip(blobs, sizes.ravel(),
                                                                     strict=True)]


def distributed_config(environ: Mapping[str, str] | None = None) -> dict | None:
    """What to pass to ``jax.distributed.initialize``, or None for a single-process run.

    Recognised launches (checked in this order):

    - explicit: ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) together with
      ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (``0 .. JAX_NUM_PROCESSES - 1``);
      ``JAX_LOCAL_DEVICE_IDS`` is read by JAX itself. Returns those three as keyword arguments.
    - Slurm ``srun`` with more than one task (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
      ``SLURM_NTASKS`` > 1, ``SLURM_PROCID``, ``SLURM_LOCALID`` all set), or Open MPI
      ``mpirun`` (``OMPI_MCA_orte_hnp_uri`` set, ``OMPI_COMM_WORLD_SIZE`` > 1): returns ``{}``,
      JAX's own cluster detection fills everything in.

    Anything else (Cloud TPU pods, Kubernetes jobs): set the three ``JAX_*`` variables, or call
    ``jax.distributed.initialize`` before the run starts.

    Args:
      environ: the environment to read; default ``os.environ``.

    Raises:
      ValueError: ``JAX_COORDINATOR_ADDRESS`` is set but the other two are missing or invalid.
    """
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {missing} are not")
        num, pid = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
        if not 0 <= pid < num:
            raise ValueError(f"JAX_PROCESS_ID={pid} must lie in [0, JAX_NUM_PROCESSES={num})")
        if num == 1:
            return None
        return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"], "num_processes": num,
                "process_id": pid}
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return {}
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return {}
    return None


def maybe_initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize`` if :func:`distributed_config` detects a
    multi-process launch; otherwise does nothing.

    Call it first thing in the entry point, before any JAX computation (JAX refuses to start
    the distributed runtime once a backend is in use). Safe to call twice.

    Returns:
      True if this process is part of a multi-process run.
    """
    if jax.distributed.is_initialized():
        return True
    kwargs = distributed_config(environ)
    if kwargs is None:
        return False
    jax.distributed.initialize(**kwargs)
    return True
