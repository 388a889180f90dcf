"""The training loop: phases of a task cycle, seeds vmapped, env stepping on the host.

One loop serves Meta-World and Atari; what differs (agent, buffer, env, goal, evaluation) comes
from :mod:`nbsp_jax.domains`. Python loops run only over phases and chunks. Per chunk of
``chunk_steps`` env steps, actions come from one jitted, seed-vmapped policy call per step; the
chunk's transitions are then written to the device-resident buffer in one call and
``chunk_steps * num_envs * updates_per_step / update_every`` gradient updates run in one jitted
``lax.scan`` (``update_many`` of :mod:`nbsp_jax.sac` or :mod:`nbsp_jax.sac_discrete`). At the
end of a phase: score neurons and install masks, keep transitions for replay, evaluate every
task (one row of ``sr``), checkpoint. The seed axis is split over the devices
(:mod:`nbsp_jax.sharding`). :func:`train_and_evaluate` is what the CLI calls.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections import deque
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nbsp_jax import metrics, nbsp, plots
from nbsp_jax import sharding as sh
from nbsp_jax.checkpoint import Checkpointer
from nbsp_jax.config import validate
from nbsp_jax.domains import MetaWorld, get_domain
from nbsp_jax.logs import Progress, SeedWriters
from nbsp_jax.masking import MaskedScaleState, masked_scale
from nbsp_jax.recorder import GoalRecorder


class Learner(NamedTuple):
    """Jitted, seed-vmapped functions of one agent (built once per run). Shapes: ``[S, ...]``."""

    domain: MetaWorld  # or domains.Atari: what differs between the two domains
    mesh: jax.sharding.Mesh | None  # devices the seed axis is split over (None: one device)
    actor_device: jax.Device | None  # where the policy acts during updates (None: after them)
    agent: object  # sac.SAC or sac_discrete.SACDiscrete
    spec: nbsp.MethodSpec
    act: callable  # (actor_params, obs [S,E,...], keys) -> (actions [S,E,...], keys)
    act_eval: callable  # (actor_params, obs [S,E,...], keys) -> (actions [S,E,...], keys)
    act_sampled_eval: callable  # the same with the training (sampled) policy, eval shapes
    add: callable  # (buffer, staged rows [S,...]) -> buffer
    update: callable  # (state, buffer, pre_buffer, step0, active [S]) -> (state, info)
    end_task: callable  # (state, obs, action, goal, valid, keys) -> EndOfTask
    store: callable  # (pre_buffer, buffer, keys, slot) -> pre_buffer
    probe: callable  # (actor_params, obs [S, n, ...]) -> policy outputs [S, n, ...]
    drift: callable  # (actor_params, obs [S, H, n, ...], ref [S, H, n, ...]) -> [S, H]


class EndOfTask(NamedTuple):
    """What scoring at the end of a task gives, each ``[S, ...]``: the state with its new
    masks, and ``{net: {layer: [S, N]}}`` goal scores, masks, skill-neuron and constant-unit
    flags."""

    state: object
    scores: dict
    masks: dict
    skill: dict
    constant: dict


def over_seeds(fn, mode: str, in_axes):
    """Maps ``fn`` over the leading seed axis.

    ``'vmap'`` batches the seeds into one computation (best on accelerators). ``'map'`` runs
    them one after another inside the same compiled call (``lax.map``), each seed's matmuls
    then use the whole CPU; on XLA:CPU this is faster than vmap's batched matmuls (see the
    README's throughput section). Both give the same values.
    """
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        seeded = tuple(a for a, ax in zip(args, in_axes, strict=True) if ax == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes,
                                                                    strict=True)))

        return jax.lax.map(one, seeded)

    return mapped


def actor_device(config) -> jax.Device | None:
    """The device the policy runs on while the update is in flight (``config.act_on='host'``),
    or None (``'learner'``: act on the learner's device, after its update).

    With an accelerator this is the host CPU. On a CPU-only machine it is the last of the
    host's devices (start with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``): XLA
    runs the computations of one device one after another, so acting on the learner's own
    device would wait for the update.
    """
    if config.act_on == "learner":
        return None
    if jax.default_backend() != "cpu":
        return jax.local_devices(backend="cpu")[0]
    if jax.local_device_count() < 2:
        raise ValueError(
            "config.act_on='host' needs a host device besides the learner's; on a CPU-only "
            "machine start with XLA_FLAGS=--xla_force_host_platform_device_count=2, or use "
            "config.act_on='learner'")
    return jax.local_devices()[-1]


def learner_devices(config) -> list:
    """Devices the learner uses: all of this process's, less the acting device on a CPU-only
    machine."""
    devices, actor = jax.local_devices(), actor_device(config)
    return [d for d in devices if d != actor] if actor in devices else devices


def run_mesh(config) -> jax.sharding.Mesh | None:
    """The device mesh the seed axis is split over, or None (one learner device, or
    ``config.shard_seeds`` off). Raises ValueError when ``num_seeds`` does not divide."""
    devices = learner_devices(config)
    if not config.shard_seeds or len(devices) == 1:
        return None
    mesh = sh.seed_mesh(devices)
    sh.check_divisible(config.num_seeds, mesh)
    return mesh


def make_learner(config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh | None = None) -> Learner:
    """Builds the agent and its jitted, vmapped step functions from ``config``.

    With a ``mesh`` (see :func:`run_mesh`), each device runs its own block of seeds
    (``shard_map``), with no communication between devices.
    """
    spec = nbsp.method_spec(config.method)
    domain = get_domain(config)
    actor = actor_device(config)
    def masked(lr):
        if not spec.masks:
            return None
        if config.mask_placement == "gradient":  # a literal port: scale the gradient for Adam
            return optax.chain(masked_scale(), domain.adam(lr))
        return optax.chain(domain.adam(lr), masked_scale())  # scale Adam's step (Alg. 2 l. 13)

    agent = domain.make_agent(masked(config.policy_lr), masked(config.q_lr))
    num_updates = domain.updates_per_chunk()

    def seeded(fn, in_axes):
        return fn if mesh is None else sh.seed_parallel(fn, mesh, in_axes)

    def acting(action_fn):
        def act(actor_params, obs, key):
            key, sub = jax.random.split(key)
            return action_fn(agent, actor_params, obs, sub), key
        if actor is not None:  # on its own device, with its own copy of the params
            return jax.jit(jax.vmap(act))
        return jax.jit(seeded(jax.vmap(act), (0, 0, 0)))

    def update(state, buffer, pre, step0, active):
        sampler = domain.sampler(agent, buffer)
        if spec.replay:
            sampler = nbsp.replay_sampler(sampler, domain.sampler(agent, pre),
                                          domain.nonempty(pre), config.replay_interval,
                                          # discrete SAC: every network on every batch
                                          getattr(agent, "policy_frequency", 1))
        new, info = domain.update_many(agent, state, sampler, num_updates, step0)
        # A seed that met the success threshold keeps its state (lockstep seeds still compute).
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), info

    def end_task(state, obs, action, goal, valid, key):
        scores, rank, constant = nbsp.score_networks(
            agent, state, obs, action, goal, valid, key, config.selector,
            config.constant_neurons == "neutral", domain.record_chunk)
        masks, skill = nbsp.build_masks(scores, rank, config.skill_proportion,
                                        config.mask_alpha, spec.hard)
        if spec.masks:
            state = nbsp.install_masks(state, masks, config.mask_target, config.mask_policy)
        return EndOfTask(state, scores, masks, skill, constant)

    def drift(actor_params, obs, ref):
        # Mean squared change of the policy's output on each earlier task's probe states.
        now = jax.vmap(lambda o: domain.probe_action(agent, actor_params, o))(obs)
        return ((now - ref) ** 2).mean(axis=tuple(range(1, now.ndim)))

    return Learner(
        domain=domain,
        mesh=mesh,
        actor_device=actor,
        agent=agent,
        spec=spec,
        act=acting(domain.sample_action),
        act_eval=acting(domain.eval_action),
        act_sampled_eval=acting(domain.sample_action),  # its own jit: no retrace of `act`
        add=jax.jit(seeded(jax.vmap(domain.add), (0, 0)), donate_argnums=0),
        update=jax.jit(seeded(over_seeds(update, config.seed_axis, in_axes=(0, 0, 0, None, 0)),
                              (0, 0, 0, None, 0)), donate_argnums=0),
        end_task=jax.jit(seeded(jax.vmap(end_task), (0,) * 6)),
        probe=jax.jit(jax.vmap(lambda p, o: domain.probe_action(agent, p, o))),
        drift=jax.jit(jax.vmap(drift)),
        store=jax.jit(seeded(jax.vmap(domain.store, in_axes=(0, 0, 0, None)), (0, 0, 0, None)),
                      donate_argnums=0),
    )


def compilations(learner: Learner) -> dict:
    """How many times each jitted learner function was compiled in this process (1 each when
    nothing recompiled after the first phase; new masks, tasks and buffers are new values)."""
    names = ["act", "act_eval", "add", "update", "end_task", "store"]
    if learner.domain.metric == "asr":  # Atari evaluates the sampled policy anyway
        names.append("act_sampled_eval")
    if learner.domain.probe_action is not None:
        names += ["probe", "drift"]
    return {name: getattr(learner, name)._cache_size() for name in names}


def seed_keys(seed: int, num_seeds: int, offset: int = 0) -> jax.Array:
    """Per-seed PRNG keys ``[S]``: seed ``s`` of the axis uses ``fold_in(key(seed), offset + s)``
    (``offset``: ``config.seed_offset``, the global index of seed 0)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(offset + jnp.arange(num_seeds))


def env_seed(config, phase: int, purpose: int = 0, restart: int = 0,
             envs_per_seed: int = 1) -> int:
    """Base environment seed of a pool of ``envs_per_seed`` envs per seed (training:
    ``purpose`` 0; evaluation of task ``i``: ``1 + i``, the same after every phase so that
    phases are compared on the same episodes).

    Derived by hashing, so pools of different runs, phases, purposes and restarts practically
    never share environment seeds (a pool uses ``base .. base + S * E - 1``, env ``k`` seed
    ``base + k``). The base is shifted by ``config.seed_offset * envs_per_seed``, so global seed
    ``g``'s envs are the same whichever process of a multi-process run steps them.
    """
    seq = np.random.SeedSequence([config.seed, phase, purpose, restart])
    base = int(seq.generate_state(1)[0] % (2**31 - 2**20))
    return base + config.seed_offset * envs_per_seed


def evaluate(learner: Learner, actor_params, task: str, config, task_index: int,
             sampled: bool = False) -> np.ndarray:
    """``sr`` entries per seed ``[S]``: the policy's score on ``task`` over ``eval_episodes``.

    One pool of ``S * eval_episodes`` envs runs one episode each, vmapped over seeds.
    Meta-World: success rate of the deterministic policy (success = any step succeeded), or
    with ``sampled`` of the training policy (as training success is measured). Atari: the
    policy's mean raw return of whole games, normalised by Table 7.
    """
    act = learner.act_sampled_eval if sampled else learner.act_eval
    n, dom = config.eval_episodes, learner.domain
    env = dom.make_env(task, n, env_seed(config, 0, 1 + task_index, envs_per_seed=n),
                       train=False)
    keys = seed_keys(config.seed + 1 + task_index, config.num_seeds, config.seed_offset)
    obs = env.reset()
    success = np.zeros((config.num_seeds, n), bool)
    ret = np.zeros((config.num_seeds, n))
    finished = np.zeros((config.num_seeds, n), bool)
    while not finished.all():
        actions, keys = act(actor_params, jnp.asarray(obs), keys)
        step, _ = env.step(np.asarray(actions))
        goal = dom.goal_step(env, step)
        success |= goal.success & ~finished
        ret += np.where(goal.valid & ~finished, goal.reward, 0.0)
        finished |= goal.valid & (goal.terminated | goal.truncated)
        obs = step.obs
    env.close()
    return dom.eval_score(task, success if dom.metric == "asr" else ret)


def _to_device(domain, stage: dict) -> dict:
    return {k: jnp.asarray(domain.to_seed_rows(v)) for k, v in stage.items()}


def prepare_workdir(workdir: str, config) -> bool:
    """Creates ``workdir`` and writes ``config.json``.

    Returns:
      True if ``workdir`` already holds a run of this same config (to resume or report).

    Raises:
      FileExistsError: the workdir holds a run of another config; the message names the fields
        that differ. Nothing in the workdir is touched.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
            raise FileExistsError(
                f"workdir {workdir!r} holds a run of a different config ({detail}); refusing "
                "to overwrite or resume it. Choose a new --workdir, or rerun with its config."
            )
        return True
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    return False


class Phase(NamedTuple):
    """Where a run stands: device tree and host dict, both checkpointed together."""

    device: dict  # state, buffer, pre, act_keys, task_keys, recorder arrays
    host: dict  # counters, sr rows, phase summaries, running stats, RNG state


def _fresh_buffer(config, domain, mesh=None):
    fresh = lambda: jax.vmap(lambda _: domain.init_buffer())(jnp.arange(config.num_seeds))
    # Built already split over the devices: a 1e6-row buffer never lands on one device whole.
    return jax.jit(fresh, out_shardings=None if mesh is None else sh.seed_sharding(mesh))()


_SEEDED = ("state", "buffer", "pre", "act_keys", "task_keys", "probes")  # recorder: [T, S, ..]

# States per task on which the actor's drift is measured after later tasks.
PROBES = 1000
# Folder of a run that holds its checkpoint at the end of phase 1's training.
FORK_POINT = "fork_point"


def _place(device: dict, mesh) -> dict:
    """Splits the seed-axis arrays of a run over ``mesh`` (no-op without one)."""
    if mesh is None:
        return device
    return {k: sh.shard_seeds(v, mesh) if k in _SEEDED else v for k, v in device.items()}


def _recorder(config, domain, rows: int | None = None, phase: int = 0) -> GoalRecorder:
    rows = -(-config.score_steps // config.num_envs) if rows is None else rows
    # The reservoir's hash differs per run, process block and phase.
    salt = (config.seed * 1009 + config.seed_offset) * 1013 + phase
    return GoalRecorder(rows, config.num_seeds, config.num_envs, domain.obs_shape,
                        domain.action_shape, domain.obs_dtype, domain.action_dtype,
                        config.score_window, salt)


def _init_run(config, learner: Learner, num_phases: int) -> Phase:
    S = config.num_seeds
    keys = seed_keys(config.seed, S, config.seed_offset)
    init_keys, act_keys, task_keys = jax.vmap(lambda k: tuple(jax.random.split(k, 3)))(keys)
    dom = learner.domain
    state = jax.vmap(functools.partial(dom.init_state, learner.agent))(init_keys)
    # Transitions of all earlier tasks (Eq. 8); a tiny, never filled buffer when the method
    # does not replay, so every method runs the same compiled update.
    stored = num_phases - 1 if learner.spec.replay else 0
    pre = jax.vmap(lambda _: dom.init_pre(stored))(jnp.arange(S))
    recorder = _recorder(config, dom)
    device = {"state": state, "buffer": _fresh_buffer(config, dom, learner.mesh), "pre": pre,
              "act_keys": act_keys, "task_keys": task_keys, "recorder": recorder.arrays()}
    if dom.probe_action is not None:
        # Per task, PROBES recorded states and the policy's output on them at the task's end.
        out = jax.eval_shape(learner.probe, state.params.actor,
                             jnp.zeros((S, PROBES, *dom.obs_shape), dom.obs_dtype))
        device["probes"] = {
            "obs": jnp.zeros((S, num_phases, PROBES, *dom.obs_shape), dom.obs_dtype),
            "ref": jnp.zeros((S, num_phases, *out.shape[1:]), out.dtype)}
    host = {
        "phase": 0, "steps": 0, "grad_step": 0, "saves": 0, "restarts": 0, "wall_s": 0.0,
        "seed_steps": [0] * S, "active": [True] * S, "steps_to_threshold": [None] * S,
        "recent": [[] for _ in range(S)], "returns": [[] for _ in range(S)],
        "recorder": recorder.host_state(), "sr_rows": [], "phases": [],
        "rng": np.random.default_rng(
            [config.seed, config.seed_offset] if config.seed_offset else config.seed
        ).bit_generator.state,
        "log_sizes": None,
    }
    return Phase(_place(device, learner.mesh), host)


def _check_finite(info: dict, phase: int, task: str, step: int) -> None:
    """Raises FloatingPointError naming the seed, step and quantity of a NaN/inf loss."""
    for name, values in info.items():
        bad = np.nonzero(~np.isfinite(np.asarray(values)))[0]
        if bad.size:
            raise FloatingPointError(
                f"non-finite {name} = {np.asarray(values)[bad[0]]} for seed {int(bad[0])} at env "
                f"step {step} of phase {phase + 1} ({task}); the run stops here and the last "
                "good checkpoint is kept"
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
      The results dict (as in ``results.json``) with the final learner state under ``'state'``.
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
    state = results.pop("state", None)
    merged = merge_process_results(config, sh.allgather_json(results))
    if i == 0:
        write_results(workdir, merged)
    merged["state"] = state  # this process's seeds
    return merged


def merge_process_results(config: ml_collections.ConfigDict, parts: list[dict]) -> dict:
    """One results dict over all ``config.num_seeds`` seeds from per-process results (each for
    its block of seeds, in process order): per-seed lists are concatenated, per-phase scalars
    (steps, times) take the largest, and the metrics are recomputed over all seeds."""
    sr = [x for p in parts for x in p["sr"]] if all(p["sr"] for p in parts) else []
    summary = metrics.summarize(metrics.metrics_for(
        np.asarray(sr, np.float64), atari=config.agent == "sac_atari")) if sr else {}
    phases = []
    for rows in zip(*(p["phases"] for p in parts), strict=True):
        merged = {}
        for k, v in rows[0].items():
            if isinstance(v, list):
                merged[k] = [x for r in rows for x in r[k]]
            elif isinstance(v, int | float) and not isinstance(v, bool):
                merged[k] = max(r[k] for r in rows)
            else:
                merged[k] = v
        phases.append(merged)
    return {**parts[0], "sr": sr, "metrics": summary, "phases": phases,
            "num_seeds": config.num_seeds, "config": json.loads(config.to_json_best_effort()),
            "wall_s": max(p["wall_s"] for p in parts), "processes": len(parts),
            "checkpoint_bytes": sum(p.get("checkpoint_bytes", 0) for p in parts)}


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
    run = _init_run(config, learner, H)
    ckpt = Checkpointer(workdir, process_local=jax.process_count() > 1)
    writers_sizes = None
    if ckpt.latest_step() is not None:
        device, host = ckpt.restore(ckpt.latest_step(), run.device)
        run = Phase(_place(device, mesh), host)
        writers_sizes = host["log_sizes"]
        print(f"resuming {workdir} from checkpoint {ckpt.latest_step()}: phase "
              f"{host['phase'] + 1}/{H}, step {host['steps']}")
    elif config.fork_from:
        run = _fork(config, learner, run, H, workdir)
        writers_sizes = run.host["log_sizes"]
        print(f"{workdir}: phase 1 trained by {config.fork_from} (its fork point); "
              f"this run goes on from there with method {config.method!r}")
    elif existing:
        writers_sizes = [0] * config.num_seeds  # killed before its first checkpoint: restart
    writers = SeedWriters(workdir, config.num_seeds, truncate_to=writers_sizes,
                          first=config.seed_offset)
    progress = Progress(H * config.steps_per_task, config.progress)
    t_start = time.perf_counter() - run.host["wall_s"]
    try:
        while run.host["phase"] < H:
            run = _train_phase(config, learner, run, phases, writers, progress, ckpt, t_start)
    finally:
        progress.close()
        writers.close()
        ckpt.close()
    results = _results(config, run.host, phases, time.perf_counter() - t_start)
    results["checkpoint_bytes"] = ckpt.size_bytes(ckpt.latest_step())
    results["compilations"] = compilations(learner)
    write_results(workdir, results)
    results["state"] = run.device["state"]
    return results


# Fields that may differ from the run a fork starts from: they act only after phase 1's
# training (scoring, masks, replay storage, evaluation) or not on results at all.
FORK_FREE = ("method", "selector", "mask_target", "mask_policy", "mask_placement", "mask_alpha",
             "skill_proportion", "constant_neurons", "replay_store_size", "replay_interval",
             "fork_from", "save_fork_point", "save_score_record", "eval_episodes", "progress",
             "checkpoint_every_s", "log_every_steps")


def check_fork_source(config) -> dict:
    """The config fields of ``config.fork_from``'s run, checked before anything is written.

    Raises:
      FileNotFoundError: no run there, or it has no fork point (``config.save_fork_point``).
      ValueError: its config differs in a field that acts during phase 1's training (named,
        with both values).
    """
    src = os.path.abspath(config.fork_from)
    if not os.path.exists(os.path.join(src, "config.json")):
        raise FileNotFoundError(f"config.fork_from={config.fork_from!r}: no run there "
                                f"(no {os.path.join(src, 'config.json')})")
    points = os.path.join(src, FORK_POINT, "checkpoints")
    if not (os.path.isdir(points) and os.listdir(points)):
        raise FileNotFoundError(
            f"config.fork_from={config.fork_from!r} has no fork point ({FORK_POINT}/): run it "
            "with --config.save_fork_point=True, or wait until its phase 1 has trained")
    with open(os.path.join(src, "config.json")) as f:
        src_fields = json.load(f)
    ours = json.loads(config.to_json_best_effort())
    diff = sorted(k for k in set(ours) | set(src_fields)
                  if k not in FORK_FREE and ours.get(k) != src_fields.get(k))
    if diff:
        detail = ", ".join(f"{k}: {src_fields.get(k)!r} (source) vs {ours.get(k)!r}"
                           for k in diff)
        raise ValueError(f"config.fork_from={config.fork_from!r} trained phase 1 with another "
                         f"config ({detail}); only {FORK_FREE} may differ")
    return src_fields


def _fork(config, learner: Learner, run: Phase, num_phases: int, workdir: str) -> Phase:
    """The run state at ``config.fork_from``'s fork point, in this run's structures (see
    :func:`check_fork_source`)."""
    src = os.path.abspath(config.fork_from)
    src_fields = check_fork_source(config)
    fork_ckpt = Checkpointer(os.path.join(src, FORK_POINT))
    step = fork_ckpt.latest_step()
    src_config = ml_collections.ConfigDict(src_fields)
    src_config.tasks = tuple(src_config.tasks)
    src_config.hidden = tuple(src_config.hidden)
    src_learner = make_learner(src_config, learner.mesh)
    template = _init_run(src_config, src_learner, num_phases).device
    device, host = fork_ckpt.restore(step, template)
    fork_ckpt.close()
    device["state"] = graft_state(device["state"], run.device["state"])
    device["pre"] = run.device["pre"]  # empty at the end of phase 1 for every method
    for s in range(config.num_seeds):  # phase 1's training curves
        name = f"seed_{config.seed_offset + s}"
        shutil.copytree(os.path.join(src, name), os.path.join(workdir, name), dirs_exist_ok=True)
    return Phase(_place(device, learner.mesh), {**host, "forked_from": src})


def graft_state(src, target):
    """``src``'s learner state in the structure of ``target``'s: the same parameters and keys;
    each optimizer state is ``src``'s, with ``masked_scale``'s state added (all-ones masks, as
    before any task ended) or dropped where the two methods' optimizer chains differ."""
    def graft(a, b):
        if jax.tree.structure(a) == jax.tree.structure(b):
            return a
        inner = lambda x: [y for y in x if not isinstance(y, MaskedScaleState)]
        if isinstance(b, tuple) and any(isinstance(y, MaskedScaleState) for y in b):
            core = a  # b = chain(adam, masked_scale) or chain(masked_scale, adam)
            if isinstance(a, tuple) and any(isinstance(y, MaskedScaleState) for y in a):
                (core,) = inner(a)
            return tuple(y if isinstance(y, MaskedScaleState) else core for y in b)
        if isinstance(a, tuple) and any(isinstance(y, MaskedScaleState) for y in a):
            (core,) = inner(a)
            return graft(core, b)
        raise ValueError("graft_state: optimizer states differ in more than masked_scale: "
                         f"{jax.tree.structure(a)} vs {jax.tree.structure(b)}")

    opt = type(target.opt)(*(graft(a, b) for a, b in zip(src.opt, target.opt, strict=True)))
    return target._replace(params=src.params, opt=opt, key=src.key)


def _check_params(params, host: dict, phases: list) -> None:
    """Raises FloatingPointError naming seed, parameter and step if any parameter is not
    finite, so that a bad state is never checkpointed."""
    finite = jax.device_get(jax.tree.map(
        lambda x: jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1), params))
    for path, ok in jax.tree_util.tree_flatten_with_path(finite)[0]:
        if not ok.all():
            seed = int(np.nonzero(~ok)[0][0])
            name = jax.tree_util.keystr(path)
            phase = min(host["phase"], len(phases) - 1)
            raise FloatingPointError(
                f"non-finite parameter {name} for seed {seed} at env step {host['steps']} of "
                f"phase {phase + 1} ({phases[phase]}); the last good checkpoint is kept")


def _save(ckpt: Checkpointer, run: Phase, writers: SeedWriters, t_start: float,
          phases: list) -> Phase:
    _check_params(run.device["state"].params, run.host, phases)
    host = dict(run.host)
    host["saves"] += 1
    host["wall_s"] = time.perf_counter() - t_start
    host["log_sizes"] = writers.sizes()
    ckpt.save(host["saves"], run.device, host)
    return Phase(run.device, host)


def _train_phase(config, learner: Learner, run: Phase, phases: list, writers: SeedWriters,
                 progress: Progress, ckpt: Checkpointer, t_start: float) -> Phase:
    """Trains the current phase from where ``run`` stands to its end, then scores, masks,
    stores replay, evaluates every task and checkpoints."""
    S, K, dom = config.num_seeds, config.chunk_steps, learner.domain
    d, h = dict(run.device), dict(run.host)
    phase = h["phase"]
    task = phases[phase]
    if h["steps"] == 0:
        # The current-task buffer starts empty at each task (SPEC section 5); every seed
        # trains again.
        d["buffer"] = _fresh_buffer(config, dom, learner.mesh)
        h["seed_steps"], h["active"] = [0] * S, [True] * S
        h["steps_to_threshold"] = [None] * S
        h["recent"], h["returns"] = [[] for _ in range(S)], [[] for _ in range(S)]
    recorder = _recorder(config, dom, phase=phase)
    if h["steps"] > 0:  # resumed mid-phase: the envs restart with new episodes
        recorder.load(d["recorder"], h["recorder"])
        recorder.cut()
        h["restarts"] += 1
    rng = np.random.default_rng()
    rng.bit_generator.state = h["rng"]
    recent = [deque(r, maxlen=config.success_window) for r in h["recent"]]
    returns = [deque(r, maxlen=config.success_window) for r in h["returns"]]
    active = np.array(h["active"], bool)
    seed_steps = np.array(h["seed_steps"], np.int64)
    env = dom.make_env(task, config.num_envs,
                       env_seed(config, phase, 0, h["restarts"], config.num_envs))
    obs = env.reset()
    start = dom.start_episode_rows(obs)  # Atari: the reset frames start the buffer's episodes
    if start is not None:
        d["buffer"] = learner.add(d["buffer"], _to_device(dom, start))
    state, act_keys = d["state"], d["act_keys"]
    # With an actor device, chunk k + 1 acts with the parameters from before update k (one
    # chunk older) while update k runs; its losses are read one chunk later.
    overlap = learner.actor_device is not None
    if overlap:
        act_keys = jax.device_put(act_keys, learner.actor_device)
    policy, pending = None, None
    steps, grad_step = h["steps"], h["grad_step"]
    t_phase, steps0, last_log, last_save = time.perf_counter(), steps, steps, time.perf_counter()
    # Where the phase's time goes: host env stepping, policy calls, learner (buffer + updates).
    timers = {"env_s": 0.0, "act_s": 0.0, "learn_s": 0.0}
    base_step = phase * config.steps_per_task

    def save_here(checkpointer):
        # Checkpoints the phase as it stands mid-loop (d, h are rebound to what was saved).
        nonlocal d, h
        d.update(state=state, act_keys=act_keys, recorder=recorder.arrays())
        h.update(steps=steps, grad_step=grad_step, seed_steps=seed_steps.tolist(),
                 active=active.tolist(), recent=[list(r) for r in recent],
                 returns=[list(r) for r in returns], recorder=recorder.host_state(),
                 rng=rng.bit_generator.state)
        writers.flush()
        run = _save(checkpointer, Phase(d, h), writers, t_start, phases)
        d, h = dict(run.device), dict(run.host)

    while steps < config.steps_per_task and active.any():
        stage = dom.new_stage()
        for k in range(K):
            if steps == config.steps_per_task or not active.any():
                break  # budget reached mid-chunk: the remaining rows stay invalid
            if steps < config.learning_starts:
                actions = dom.random_actions(rng)
            else:
                t0 = time.perf_counter()
                if overlap and policy is None:  # acting starts before the first update
                    policy = jax.device_put(state.params.actor, learner.actor_device)
                params = policy if overlap else state.params.actor
                actions, act_keys = learner.act(params, jnp.asarray(obs), act_keys)
                actions = np.asarray(actions)
                timers["act_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            step, episodes = env.step(actions)
            timers["env_s"] += time.perf_counter() - t0
            recorder.add(obs, actions, dom.goal_step(env, step), active)
            dom.stage_step(stage, k, obs, actions, step, active)
            obs = step.obs
            # Lockstep seeds: every seed's env steps (or resets) together.
            if dom.counts_invalid_steps or step.valid[0, 0]:
                steps += 1
                seed_steps += active
            for s, ret, succ in zip(episodes.seed, episodes.ret, episodes.success, strict=True):
                if not active[s]:
                    continue
                recent[s].append(float(succ))
                returns[s].append(float(ret))
                writers.write(int(s), base_step + int(seed_steps[s]),
                              {"charts/episodic_return": ret,
                               "charts/success_rate": np.mean(recent[s])}, task=task)
                if (config.early_stop and len(recent[s]) == config.success_window
                        and np.mean(recent[s]) >= config.success_threshold):
                    active[s] = False
                    h["steps_to_threshold"][s] = int(seed_steps[s])
        t0 = time.perf_counter()
        d["buffer"] = learner.add(d["buffer"], _to_device(dom, stage))
        info = None
        if steps >= config.learning_starts:
            if overlap:
                policy = jax.device_put(state.params.actor, learner.actor_device)
            state, info = learner.update(state, d["buffer"], d["pre"], jnp.int32(grad_step),
                                         jnp.asarray(active))
            grad_step += dom.updates_per_chunk()
            if overlap:
                pending, (info, at) = (info, steps), pending or (None, steps)
            else:
                at = steps
            if info is not None:
                info = jax.device_get(info)  # a few scalars
                _check_finite(info, phase, task, at)
        timers["learn_s"] += time.perf_counter() - t0
        sps = (steps - steps0) / (time.perf_counter() - t_phase)
        if info is not None and steps - last_log >= config.log_every_steps:
            last_log = steps
            scalars = {f"losses/{k}": v for k, v in info.items()}
            scalars["charts/SPS"] = np.full(S, sps)
            writers.write_all(base_step + steps, scalars, task=task)
            writers.flush()
        progress.update(base_step + steps, f"{task} ({phase + 1}/{len(phases)})", sps,
                        dom.progress_text(recent, returns))
        if time.perf_counter() - last_save >= config.checkpoint_every_s:
            save_here(ckpt)
            last_save = time.perf_counter()
    env.close()
    if pending is not None:  # the last update's losses (overlap mode)
        _check_finite(jax.device_get(pending[0]), phase, task, pending[1])
    if phase == 0 and config.save_fork_point and not h.get("forked_from"):
        # The end of phase 1's training, before anything method-specific happens: other
        # methods can start from here (config.fork_from), paired with this run.
        fork_ckpt = Checkpointer(os.path.join(writers.workdir, FORK_POINT), max_to_keep=1)
        save_here(fork_ckpt)
        fork_ckpt.close()

    # End of the phase: score neurons and install masks, keep transitions for replay,
    # evaluate every task, checkpoint.
    task_keys, score_keys, store_keys = jax.vmap(
        lambda k: tuple(jax.random.split(k, 3)))(d["task_keys"])
    rec = recorder.result()
    state, goal_kind, constant = _end_of_task(config, learner, state, rec, score_keys,
                                              writers.workdir, phase, task)
    drift = _probe_drift(config, learner, d, state, rec, phase)
    if learner.spec.replay and phase < len(phases) - 1:
        d["pre"] = learner.store(d["pre"], d["buffer"], store_keys, phase)
    evals = {}
    if config.eval_episodes:
        for i, t in enumerate(config.tasks):
            evals[t] = evaluate(learner, state.params.actor, t, config, i)
        h["sr_rows"].append([evals[t].tolist() for t in phases])  # [H][S]
        if dom.metric == "asr":  # the same episodes with the sampled (training) policy
            evals["sampled"] = evaluate(learner, state.params.actor, task, config,
                                        config.tasks.index(task), sampled=True)
    h["phases"].append({
        "task": task,
        "env_steps": steps,
        "seed_env_steps": seed_steps.tolist(),
        "steps_to_threshold": h["steps_to_threshold"],
        "train_success_rate": [float(np.mean(r)) if r else None for r in recent],
        "episodic_return": [float(np.mean(r)) if r else None for r in returns],
        f"eval_{dom.sr_name}": evals[task].tolist() if evals else None,
        f"eval_sampled_{dom.sr_name}": evals["sampled"].tolist() if "sampled" in evals else None,
        "wall_s": time.perf_counter() - t_phase,
        **timers,
        "goal_metric": goal_kind,
        # Per seed, {net/layer: units constant over the scoring window} and layer widths.
        "constant_units": constant,
        # Per seed, the policy's mean squared output change on each earlier task's probe
        # states since the end of that task (deterministic action for Meta-World).
        "actor_drift": drift,
    })
    d.update(state=state, act_keys=act_keys, task_keys=task_keys,
             buffer=d["buffer"], recorder=_recorder(config, dom).arrays())
    h.update(phase=phase + 1, steps=0, restarts=0, grad_step=grad_step,
             rng=rng.bit_generator.state, recorder=_recorder(config, dom, 1).host_state())
    writers.flush()
    return _save(ckpt, Phase(d, h), writers, t_start, phases)


def _results(config, host: dict, phases: list, wall_s: float) -> dict:
    if host["sr_rows"]:  # eval_episodes > 0
        sr = np.transpose(np.asarray(host["sr_rows"], np.float64), (2, 0, 1))  # [S, H, H]
        summary = metrics.summarize(metrics.metrics_for(sr, atari=config.agent == "sac_atari"))
        sr = sr.tolist()
    else:
        sr, summary = [], {}
    return {
        "tasks": phases,
        "sr": sr,
        "metrics": summary,
        "phases": host["phases"],
        "num_seeds": config.num_seeds,
        "method": config.method,
        "config": json.loads(config.to_json_best_effort()),
        "versions": library_versions(),
        "wall_s": wall_s,
    }


def write_results(workdir: str, results: dict) -> None:
    """Writes ``results.json``, ``results.md`` and the plots (their paths go to
    ``results['plots']``)."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(results_table([results]))
    if results["config"]["agent"] == "sac_atari":  # Atari has returns, not success
        curves = plots.plot_success(workdir, os.path.join(workdir, "return.png"),
                                    tag="charts/episodic_return")
    else:
        curves = plots.plot_success(workdir)
    results["plots"] = [curves]
    if results["sr"]:
        results["plots"].append(plots.plot_sr(results, os.path.join(workdir, "sr.png")))


def results_table(runs: list[dict]) -> str:
    """A Markdown table in the form of the paper's Table 1 rows: mean +- stderr over seeds."""
    name = "AR" if any("ar" in r["metrics"] for r in runs) else "ASR"
    lines = [f"| method | tasks | seeds | {name} | FM | FWT |", "|---|---|---|---|---|---|"]

    def cell(m, k):
        if k not in m or not np.isfinite(m[k]["mean"]):
            return "-"  # e.g. FM of a single phase
        return f"{m[k]['mean']:.3f} ± {m[k]['stderr']:.3f}"

    for r in runs:
        m = r["metrics"]
        seq = " → ".join(r["tasks"][: len(r["config"]["tasks"])])
        lines.append(f"| {r['method']} | {seq} (x{r['config']['cycles']}) | {r['num_seeds']} "
                     f"| {cell(m, 'ar' if 'ar' in m else 'asr')} | {cell(m, 'fm')} "
                     f"| {cell(m, 'fwt')} |")
    return "\n".join(lines) + "\n"


def _probe_drift(config, learner: Learner, d: dict, state, rec, phase: int) -> list | None:
    """Actor drift on earlier tasks' probe states, then this task's probes (in ``d``).

    Returns:
      Per seed, ``[drift on task j for j < phase]``; None when the domain has no probes.
    """
    if "probes" not in d:
        return None
    probes = d["probes"]
    drift = np.asarray(learner.drift(state.params.actor, probes["obs"], probes["ref"]))
    # This task's probes: PROBES valid recorded rows, drawn without replacement.
    rng = np.random.default_rng([config.seed, config.seed_offset, phase])
    obs = np.zeros((config.num_seeds, PROBES, *rec.obs.shape[2:]), rec.obs.dtype)
    for s in range(config.num_seeds):
        rows = np.flatnonzero(rec.valid[s])
        rows = rng.choice(rows, PROBES, replace=rows.size < PROBES) if rows.size else rows
        obs[s, : rows.size] = rec.obs[s, rows]
    obs = jnp.asarray(obs)
    ref = learner.probe(state.params.actor, obs)
    d["probes"] = {"obs": probes["obs"].at[:, phase].set(obs),
                   "ref": probes["ref"].at[:, phase].set(ref)}
    return drift[:, :phase].tolist()


def _end_of_task(config, learner: Learner, state, rec, keys, workdir: str, phase: int,
                 task: str):
    """Scores neurons on the task's recorded steps, installs masks, saves them as .npz.

    The goal metric is episode success (Meta-World) or the raw return of the game (Atari). A
    Meta-World seed whose recorded success is constant (all episodes succeeded, or none)
    carries no goal information, so that seed falls back to the episode return, a graded
    metric (SPEC section 3), and the switch is logged.

    Args:
      rec: the task's :class:`~nbsp_jax.recorder.Recorded` steps.

    Returns:
      The new state, per seed the goal metric used (``'success'`` or ``'return'``), and per
      seed ``{'net/layer': [constant units, width]}``.
    """
    goal = rec.success.copy()
    kinds = []
    for s in range(goal.shape[0]):
        v = rec.valid[s]
        if learner.domain.goal == "return":
            goal[s] = rec.ret[s]
            kinds.append("return")
        elif v.any() and goal[s][v].min() == goal[s][v].max():
            seed = learner.domain.config.seed_offset + s  # global index in multi-process runs
            print(f"[nbsp] seed {seed}, task {task}: episode success is constant "
                  f"({goal[s][v].max():.0f}) over the {v.sum()} recorded steps; scoring with "
                  "episode return instead")
            goal[s] = rec.ret[s]
            kinds.append("return")
        else:
            kinds.append("success")
    out = learner.end_task(state, jnp.asarray(rec.obs), jnp.asarray(rec.action),
                           jnp.asarray(goal), jnp.asarray(rec.valid), keys)
    arrays = {"goal_metric_is_return": np.array([k == "return" for k in kinds])}
    trees = {"score": out.scores, "mask": out.masks, "skill": out.skill,
             "constant": out.constant}
    for name, tree in trees.items():
        for net, layers in tree.items():
            for layer, value in layers.items():
                arrays[f"{net}/{layer}/{name}"] = np.asarray(value)
    folder = os.path.join(workdir, "neurons")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"phase{phase + 1:02d}_{task}")
    np.savez(stem + ".npz", **arrays)
    if config.save_score_record:
        _save_record(stem + "_record.npz", rec, goal, state)
    constant = [{f"{net}/{layer}": [int(v[s].sum()), int(v.shape[-1])]
                 for net, layers in out.constant.items() for layer, v in
                 jax.device_get(layers).items()} for s in range(goal.shape[0])]
    for s, counts in enumerate(constant):
        seed = config.seed_offset + s
        print(f"[nbsp] seed {seed}, task {task}: units constant over the scoring window: "
              + ", ".join(f"{k} {c}/{n}" for k, (c, n) in counts.items()))
    return out.state, kinds, constant


def _save_record(path: str, rec, goal: np.ndarray, state) -> None:
    """The scoring record and the end-of-task networks, for experiments/permutation_test.py:
    ``obs, action, success, ret, goal, valid, episode, step`` ``[S, T, ...]`` and the
    networks' parameters as ``params/{actor,qf1,qf2}/<path>`` ``[S, ...]``."""
    from flax import traverse_util

    p = jax.device_get(state.params)
    nets = {"actor": p.actor, "qf1": p.q["qf1"], "qf2": p.q["qf2"]}
    flat = traverse_util.flatten_dict(nets, sep="/")
    np.savez_compressed(path, obs=rec.obs, action=rec.action, success=rec.success, ret=rec.ret,
                        goal=goal, valid=rec.valid, episode=rec.episode, step=rec.step,
                        **{f"params/{k}": np.asarray(v) for k, v in flat.items()})


def library_versions() -> dict:
    """Versions of the libraries that determine results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nbsp_jax", "jax", "jaxlib", "flax", "optax", "envpool", "metaworld", "mujoco",
                 "gymnasium", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["device"] = str(jax.devices()[0].device_kind)
    return out
