"""The training loop over the phases of a task cycle, seeds vmapped, env stepping on the host.

One loop serves Meta-World and Atari; what differs (agent, buffer, env, goal, evaluation) comes
from the domain (:mod:`nbsp_jax.domains`). Python loops run only over phases and chunks
(:mod:`~nbsp_jax.training.phase`). At the end of a phase: score neurons and install masks,
keep transitions for replay, evaluate every task (one row of ``sr``), checkpoint. The seed
axis is split over the devices (:mod:`~nbsp_jax.training.sharding`); a multi-process run
trains a block of seeds per process. :func:`train_and_evaluate` is what the CLI calls.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from nbsp_jax.config import validate
from nbsp_jax.training import sharding as sh
from nbsp_jax.training.fork import check_fork_source, fork
from nbsp_jax.training.learner import compilations, make_learner, run_mesh
from nbsp_jax.training.phase import train_phase
from nbsp_jax.training.state import init_run, restore
from nbsp_jax.workdir.checkpoint import Checkpointer
from nbsp_jax.workdir.logs import Progress, SeedWriters
from nbsp_jax.workdir.results import (
    merge_process_results,
    prepare_workdir,
    results_dict,
    write_results,
)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config.num_seeds`` seeds on ``config.tasks`` x ``config.cycles`` phases.

    After every phase, every task of the sequence is evaluated for all seeds at once, giving
    ``sr[seed, i, j]``; at the end ``results.json`` holds sr, ASR/FM/FWT and the run's details.
    Rerunning with the same config and workdir resumes from the latest checkpoint.

    Args:
      config: a config (see :mod:`nbsp_jax.config`); validated before anything is built.
      workdir: output folder (see the README for its files).

    Returns:
      The results dict (as in ``results.json``) with the final learner state under ``'state'``;
      a run stopped by ``config.stop_after_phase`` returns only ``{'stopped_after_phase': h,
      'num_phases': H, 'state': ...}`` and writes no ``results.json``.
    """
    validate(config)
    if jax.process_count() > 1:
        return _train_processes(config, workdir)
    return _train_local(config, workdir)


def _train_processes(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """A multi-process run (``jax.distributed``): process ``i`` of ``P`` trains the global
    seeds ``i * S / P .. (i + 1) * S / P - 1`` on its own devices into ``workdir/process_{i}``
    (``config.seed_offset = i * S / P``: those seeds get the keys and env seeds they would have
    in a one-process run). Seeds never talk to each other, so nothing crosses processes while
    training; at the end every process gathers all results and process 0 writes the merged
    ``results.json`` and plots into ``workdir``.
    """
    P, i, S = jax.process_count(), jax.process_index(), config.num_seeds
    if S % P:
        raise ValueError(
            f"config.num_seeds={S} must be a multiple of the number of processes ({P}); "
            f"valid choices: {', '.join(str(P * k) for k in range(1, 5))}, ...")
    if config.seed_offset:
        raise ValueError(f"config.seed_offset={config.seed_offset}: a multi-process run sets "
                         "it per process; leave it at 0")
    if i == 0:
        prepare_workdir(workdir, config)  # refuses a workdir of another run before training
    local = ml_collections.ConfigDict(config.to_dict())
    local.num_seeds, local.seed_offset = S // P, i * (S // P)
    results = _train_local(local, os.path.join(workdir, f"process_{i}"))
    if "stopped_after_phase" in results:
        return results
    state = results.pop("state", None)
    merged = merge_process_results(config, sh.allgather_json(results))
    if i == 0:
        write_results(workdir, merged)
    merged["state"] = state  # this process's seeds
    return merged


def _train_local(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """:func:`train_and_evaluate` for the seeds of this process, on its own devices."""
    mesh = run_mesh(config)  # num_seeds must divide over the devices: fail before writing
    if config.fork_from:
        check_fork_source(config)  # before the workdir holds this config
    existing = prepare_workdir(workdir, config)
    phases = [t for _ in range(config.cycles) for t in config.tasks]
    H = len(phases)
    results_path = os.path.join(workdir, "results.json")
    if existing and os.path.exists(results_path):
        print(f"{workdir} already holds the finished run; nothing to do")
        with open(results_path) as f:
            return json.load(f)
    learner = make_learner(config, mesh)
    device, host = init_run(config, learner, H)
    ckpt = Checkpointer(workdir, process_local=jax.process_count() > 1)
    writers_sizes = None
    if ckpt.latest_step() is not None:
        device, host = restore(ckpt, ckpt.latest_step(), device, mesh)
        writers_sizes = host.log_sizes
        print(f"resuming {workdir} from checkpoint {ckpt.latest_step()}: phase "
              f"{host.phase + 1}/{H}, step {host.steps}")
    elif config.fork_from:
        device, host = fork(config, learner, device, H, workdir)
        writers_sizes = host.log_sizes
        print(f"{workdir}: phase 1 trained by {config.fork_from} (its fork point); "
              f"this run goes on from there with method {config.method!r}")
    elif existing:
        writers_sizes = [0] * config.num_seeds  # killed before its first checkpoint: restart
    writers = SeedWriters(workdir, config.num_seeds, truncate_to=writers_sizes,
                          first=config.seed_offset)
    progress = Progress(H * config.steps_per_task, config.progress)
    t_start = time.perf_counter() - host.wall_s
    stop = min(H, config.stop_after_phase or H)
    try:
        while host.phase < stop:
            device, host = train_phase(config, learner, device, host, phases, writers, progress,
                                       ckpt, t_start)
    finally:
        progress.close()
        writers.close()
        ckpt.close()
    if host.phase < H:  # config.stop_after_phase: the checkpoint holds the run; no results
        print(f"{workdir}: stopped after phase {host.phase}/{H} (config.stop_after_phase); "
              "rerun without it to go on")
        return {"stopped_after_phase": host.phase, "num_phases": H, "state": device.state}
    results = results_dict(config, host.sr_rows, host.phases, phases,
                           time.perf_counter() - t_start, str(jax.devices()[0].device_kind))
    results["checkpoint_bytes"] = ckpt.size_bytes(ckpt.latest_step())
    results["compilations"] = compilations(learner)
    write_results(workdir, results)
    results["state"] = device.state
    return results
