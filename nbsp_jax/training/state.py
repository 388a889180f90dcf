"""The state of a run, typed: device arrays (:class:`DeviceState`) and host bookkeeping
(:class:`HostState`), checkpointed together (:func:`save`, :func:`restore`).

A checkpoint holds ``DeviceState`` as a dict of its non-None fields and ``HostState`` as a
JSON dict; :data:`FORMAT` numbers that layout, and a checkpoint of another number is refused
with a message that names both (checkpoints written before the number existed have the same
layout and restore as format 1).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax.method import GoalRecorder, cbp_init
from nbsp_jax.training import sharding as sh
from nbsp_jax.training.learner import Learner, cbp_widths, seed_keys
from nbsp_jax.workdir.checkpoint import Checkpointer

# Layout number of a checkpoint's device dict and host JSON.
FORMAT = 1
# States per task on which the actor's drift is measured after later tasks.
PROBES = 1000


class DeviceState(NamedTuple):
    """Device arrays of a run, each with a leading seed axis ``[S, ...]`` (the recorder's
    ``[T, S, ...]``)."""

    state: Any  # the learner state (SACState)
    buffer: Any  # current-task buffer
    pre: Any  # earlier-task buffer (Eq. 8)
    act_keys: jax.Array  # PRNG keys of the acting policy
    task_keys: jax.Array  # PRNG keys split once per task (scoring, replay storage)
    recorder: dict  # the goal recorder's arrays (GoalRecorder.arrays)
    probes: dict | None = None  # {'obs': [S, H, PROBES, ...], 'ref': [S, H, ...]}; Meta-World
    cbp: dict | None = None  # {net: CBPState} of [S, ...] arrays; method='cbp' only
    # method='ancl' only: the agent held while its auxiliary copy trains (``state`` then holds
    # the auxiliary); a copy of the agent at other times, so that the checkpoint's layout stays.
    held: Any = None


# Fields with a leading seed axis (the recorder's is [T, S, ...]).
_SEEDED = ("state", "buffer", "pre", "act_keys", "task_keys", "probes", "cbp", "held")


@dataclasses.dataclass
class HostState:
    """Host bookkeeping of a run (JSON in a checkpoint). Per-seed lists have ``S`` entries."""

    phase: int  # phases finished
    steps: int  # env steps of the current phase so far (lockstep over seeds)
    grad_step: int  # gradient steps so far (over the whole run)
    saves: int  # checkpoints written
    restarts: int  # resumptions of the current phase
    wall_s: float  # seconds trained, over all resumptions
    seed_steps: list  # per seed, env steps of the current phase while active
    active: list  # per seed, still training (success threshold not met)
    steps_to_threshold: list  # per seed, env steps when the threshold was met, or None
    recent: list  # per seed, success of the last success_window episodes
    returns: list  # per seed, return of the last success_window episodes
    recorder: dict  # the goal recorder's host state
    sr_rows: list  # per finished phase, [H][S] evaluation scores
    phases: list  # per finished phase, its summary (results.json 'phases')
    rng: dict  # numpy bit-generator state of the random initial actions
    log_sizes: list | None = None  # bytes of each seed's JSONL log at the checkpoint
    forked_from: str | None = None  # the run whose fork point phase 1 came from
    # Per net, per seed, units reset (ReDo) or replaced (CBP) so far in the current phase.
    resets: dict | None = None
    # ANCL's stage of the current phase: '' (not begun, or no auxiliary stage), 'aux' (the
    # auxiliary agent trains), 'main' (the auxiliary has trained; the agent trains).
    stage: str = ""
    # ANCL: the current phase's auxiliary training, summarised ({} until it has run).
    aux_summary: dict | None = None
    format: int = FORMAT


def new_recorder(config, domain, rows: int | None = None, phase: int = 0) -> GoalRecorder:
    """The goal recorder of ``phase`` (``rows`` per env: ``score_steps / num_envs``)."""
    rows = -(-config.score_steps // config.num_envs) if rows is None else rows
    # The reservoir's hash differs per run, process block and phase.
    salt = (config.seed * 1009 + config.seed_offset) * 1013 + phase
    return GoalRecorder(rows, config.num_seeds, config.num_envs, domain.obs_shape,
                        domain.action_shape, domain.obs_dtype, domain.action_dtype,
                        config.score_window, salt)


def fresh_buffer(config, domain, mesh=None):
    """An empty current-task buffer per seed ``[S, ...]``, built already split over ``mesh``
    (a 1e6-row buffer never lands on one device whole)."""
    fresh = lambda: jax.vmap(lambda _: domain.init_buffer())(jnp.arange(config.num_seeds))
    return jax.jit(fresh, out_shardings=None if mesh is None else sh.seed_sharding(mesh))()


def place(device: DeviceState, mesh) -> DeviceState:
    """Splits the seed-axis arrays of a run over ``mesh`` (no-op without one)."""
    if mesh is None:
        return device
    return device._replace(**{k: sh.shard_seeds(getattr(device, k), mesh) for k in _SEEDED
                              if getattr(device, k) is not None})


def init_run(config, learner: Learner, num_phases: int) -> tuple[DeviceState, HostState]:
    """The state before the first phase: fresh agents, empty buffers, no probes yet."""
    S = config.num_seeds
    keys = seed_keys(config.seed, S, config.seed_offset)
    init_keys, act_keys, task_keys = jax.vmap(lambda k: tuple(jax.random.split(k, 3)))(keys)
    dom = learner.domain
    state = jax.vmap(functools.partial(dom.init_state, learner.agent))(init_keys)
    if learner.spec.inject:  # plasticity injection: only the base networks train at first
        state = learner.task_switch(state, init_keys, jnp.int32(-1))
    # Transitions of all earlier tasks (Eq. 8); a tiny, never filled buffer when the method
    # does not replay, so every method runs the same compiled update.
    stored = num_phases - 1 if learner.spec.replay else 0
    pre = jax.vmap(lambda _: dom.init_pre(stored))(jnp.arange(S))
    recorder = new_recorder(config, dom)
    probes = None
    if dom.probe_action is not None:
        # Per task, PROBES recorded states and the policy's output on them at the task's end.
        out = jax.eval_shape(learner.probe, state.params.actor,
                             jnp.zeros((S, PROBES, *dom.obs_shape), dom.obs_dtype))
        probes = {"obs": jnp.zeros((S, num_phases, PROBES, *dom.obs_shape), dom.obs_dtype),
                  "ref": jnp.zeros((S, num_phases, *out.shape[1:]), out.dtype)}
    cbp = None
    if learner.spec.cbp:  # CBP's utilities and ages, zero for every seed
        one = jax.tree.map(lambda x: x[0], state)
        widths = cbp_widths(dom, learner.agent, one)
        cbp = jax.tree.map(lambda x: jnp.broadcast_to(x, (S, *x.shape)),
                           {net: cbp_init(w) for net, w in widths.items()})
    held = jax.tree.map(jnp.copy, state) if learner.spec.ancl else None
    device = DeviceState(state, fresh_buffer(config, dom, learner.mesh), pre, act_keys,
                         task_keys, recorder.arrays(), probes, cbp, held)
    seed = [config.seed, config.seed_offset] if config.seed_offset else config.seed
    host = HostState(
        phase=0, steps=0, grad_step=0, saves=0, restarts=0, wall_s=0.0, seed_steps=[0] * S,
        active=[True] * S, steps_to_threshold=[None] * S, recent=[[] for _ in range(S)],
        returns=[[] for _ in range(S)], recorder=recorder.host_state(), sr_rows=[], phases=[],
        rng=np.random.default_rng(seed).bit_generator.state)
    return place(device, learner.mesh), host


def check_params(params, host: HostState, phases: list) -> None:
    """Raises FloatingPointError naming seed, parameter and step if any parameter is not
    finite, so that a bad state is never checkpointed."""
    finite = jax.device_get(jax.tree.map(
        lambda x: jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1), params))
    for path, ok in jax.tree_util.tree_flatten_with_path(finite)[0]:
        if not ok.all():
            seed = int(np.nonzero(~ok)[0][0])
            name = jax.tree_util.keystr(path)
            phase = min(host.phase, len(phases) - 1)
            raise FloatingPointError(
                f"non-finite parameter {name} for seed {seed} at env step {host.steps} of "
                f"phase {phase + 1} ({phases[phase]}); the last good checkpoint is kept")


def save(ckpt: Checkpointer, device: DeviceState, host: HostState, log_sizes: list,
         t_start: float, phases: list) -> HostState:
    """Checkpoints the run (after checking its parameters); returns the host state saved."""
    check_params(device.state.params, host, phases)
    host = dataclasses.replace(host, saves=host.saves + 1,
                               wall_s=time.perf_counter() - t_start, log_sizes=log_sizes)
    tree = {k: v for k, v in device._asdict().items() if v is not None}
    ckpt.save(host.saves, tree, dataclasses.asdict(host))
    return host


def restore(ckpt: Checkpointer, step: int, template: DeviceState,
            mesh=None) -> tuple[DeviceState, HostState]:
    """Reads checkpoint ``step`` into the structures of ``template``.

    Raises:
      ValueError: the checkpoint's format is not :data:`FORMAT` (both named).
    """
    tree = {k: v for k, v in template._asdict().items() if v is not None}
    device, host = ckpt.restore(step, tree)
    found = host.get("format", 1)
    if found != FORMAT:
        raise ValueError(f"checkpoint {step} in {ckpt.directory} has format {found}; this "
                         f"version of nbsp_jax reads format {FORMAT}. Rerun in a new workdir.")
    fields = {f.name for f in dataclasses.fields(HostState)}
    host = HostState(**{k: v for k, v in host.items() if k in fields})
    return place(DeviceState(**device), mesh), host
