"""One phase of a cycle (one task), in named steps: :meth:`PhaseRun.start`, then
:meth:`~PhaseRun.collect_chunk` and :meth:`~PhaseRun.learn_chunk` until the budget is spent or
every seed met the success threshold, then :meth:`~PhaseRun.end` (score, mask, store replay,
evaluate, checkpoint).

Per chunk of ``chunk_steps`` env steps, actions come from one jitted, seed-vmapped policy call
per step; the chunk's transitions are then written to the device buffer in one call and the
chunk's gradient updates run in one jitted ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax.training.evaluate import env_seed, evaluate
from nbsp_jax.training.learner import Learner
from nbsp_jax.training.state import (
    DeviceState,
    HostState,
    fresh_buffer,
    new_recorder,
    save,
)
from nbsp_jax.training.task_end import probe_drift, score_task
from nbsp_jax.types import EpisodeStats
from nbsp_jax.workdir.checkpoint import Checkpointer
from nbsp_jax.workdir.logs import SeedWriters

# Folder of a run that holds its checkpoint at the end of phase 1's training.
FORK_POINT = "fork_point"


class Episodes:
    """Per-seed episode bookkeeping of a phase: success and return of the last
    ``success_window`` episodes, env steps while active, and the success-threshold gate."""

    def __init__(self, config, host: HostState, prefix: str = ""):
        self.config = config
        self.prefix = prefix  # of the logged keys ("ancl_aux/" for ANCL's auxiliary agent)
        self.recent = [deque(r, maxlen=config.success_window) for r in host.recent]
        self.returns = [deque(r, maxlen=config.success_window) for r in host.returns]
        self.active = np.array(host.active, bool)
        self.seed_steps = np.array(host.seed_steps, np.int64)
        self.steps_to_threshold = list(host.steps_to_threshold)

    def finish(self, episodes: EpisodeStats, writers: SeedWriters, base_step: int,
               task: str) -> None:
        """Logs the episodes that ended on this step; a seed that reaches the success
        threshold stops training (``config.early_stop``)."""
        c = self.config
        for s, ret, succ in zip(episodes.seed, episodes.ret, episodes.success, strict=True):
            if not self.active[s]:
                continue
            self.recent[s].append(float(succ))
            self.returns[s].append(float(ret))
            writers.write(int(s), base_step + int(self.seed_steps[s]),
                          {f"{self.prefix}charts/episodic_return": ret,
                           f"{self.prefix}charts/success_rate": np.mean(self.recent[s])},
                          task=task)
            if (c.early_stop and len(self.recent[s]) == c.success_window
                    and np.mean(self.recent[s]) >= c.success_threshold):
                self.active[s] = False
                self.steps_to_threshold[s] = int(self.seed_steps[s])

    def host_fields(self) -> dict:
        """These fields of :class:`HostState`."""
        return dict(seed_steps=self.seed_steps.tolist(), active=self.active.tolist(),
                    steps_to_threshold=list(self.steps_to_threshold),
                    recent=[list(r) for r in self.recent],
                    returns=[list(r) for r in self.returns])


class HostActor:
    """``config.act_on='host'``: the policy acts on its own device while the update runs there
    too. Chunk ``k + 1`` acts with the parameters from before update ``k`` (one chunk older),
    and update ``k``'s losses are read one chunk later."""

    def __init__(self, learner: Learner):
        self.device = learner.actor_device
        self.policy = None
        self.pending = None  # (losses, env step) of the update in flight

    def params(self, state):
        if self.policy is None:  # acting starts before the first update
            self.refresh(state)
        return self.policy

    def refresh(self, state) -> None:
        self.policy = jax.device_put(state.params.actor, self.device)

    def swap(self, info, steps: int):
        """Holds this update's losses; returns the previous update's ``(losses, step)``."""
        done, self.pending = self.pending or (None, steps), (info, steps)
        return done


def check_finite(info: dict, phase: int, task: str, step: int) -> None:
    """Raises FloatingPointError naming the seed, step and quantity of a NaN/inf loss."""
    for name, values in info.items():
        bad = np.nonzero(~np.isfinite(np.asarray(values)))[0]
        if bad.size:
            raise FloatingPointError(
                f"non-finite {name} = {np.asarray(values)[bad[0]]} for seed {int(bad[0])} at env "
                f"step {step} of phase {phase + 1} ({task}); the run stops here and the last "
                "good checkpoint is kept")


class PhaseRun:
    """The phase in progress: its env pool, recorder, episodes and the learner state."""

    @classmethod
    def start(cls, config, learner: Learner, device: DeviceState, host: HostState,
              phases: list) -> PhaseRun:
        """Opens phase ``host.phase`` (fresh buffer and bookkeeping at its first step; a
        resumed phase restarts its envs with new episodes)."""
        run = cls.__new__(cls)
        run.config, run.learner, run.dom, run.phases = config, learner, learner.domain, phases
        run.phase, S = host.phase, config.num_seeds
        run.task = phases[run.phase]
        if host.steps == 0:
            # The current-task buffer starts empty at each task (SPEC section 5); every seed
            # trains again.
            device = device._replace(buffer=fresh_buffer(config, run.dom, learner.mesh))
            host = dataclasses.replace(
                host, seed_steps=[0] * S, active=[True] * S, steps_to_threshold=[None] * S,
                recent=[[] for _ in range(S)], returns=[[] for _ in range(S)])
        # ANCL's auxiliary agent trains this phase's task first, with its own budget and logs.
        run.aux = host.stage == "aux"
        run.budget = (config.ancl_aux_steps or config.steps_per_task) if run.aux else \
            config.steps_per_task
        run.prefix = "ancl_aux/" if run.aux else ""
        run.recorder = new_recorder(config, run.dom, phase=run.phase)
        if host.steps > 0:
            run.recorder.load(device.recorder, host.recorder)
            run.recorder.cut()
            host = dataclasses.replace(host, restarts=host.restarts + 1)
        run.rng = np.random.default_rng()
        run.rng.bit_generator.state = host.rng
        run.episodes = Episodes(config, host, run.prefix)
        run.env = run.dom.make_env(run.task, config.num_envs,
                                   env_seed(config, run.phase, 0, host.restarts,
                                            config.num_envs))
        run.obs = run.env.reset()
        start = run.dom.start_episode_rows(run.obs)  # Atari: reset frames start episodes
        if start is not None:
            device = device._replace(buffer=learner.add(device.buffer, run.to_device(start)))
        run.device, run.host = device, host
        run.state, run.act_keys = device.state, device.act_keys
        # The parameters at the phase's start (or its resumption), for the update norm; a
        # copy, since the update donates the state's buffers.
        run.params0 = jax.tree.map(jnp.copy, device.state.params)
        run.resumed_at = host.steps
        # Units reset in this phase so far (kept over a resumption by the checkpoint).
        run.redo_resets = {net: jnp.asarray((host.resets or {}).get(net, [0] * S), jnp.int32)
                           for net in ("actor", "qf1", "qf2")}
        run.actor = HostActor(learner) if learner.actor_device is not None else None
        if run.actor is not None:
            run.act_keys = jax.device_put(run.act_keys, learner.actor_device)
        run.steps, run.grad_step = host.steps, host.grad_step
        run.t_phase, run.steps0 = time.perf_counter(), run.steps
        # Where the phase's time goes: host env stepping, policy calls, learner.
        run.timers = {"env_s": 0.0, "act_s": 0.0, "learn_s": 0.0}
        run.base_step = run.phase * config.steps_per_task
        return run

    def running(self) -> bool:
        return self.steps < self.budget and self.episodes.active.any()

    def to_device(self, stage: dict) -> dict:
        return {k: jnp.asarray(self.dom.to_seed_rows(v)) for k, v in stage.items()}

    def act(self) -> np.ndarray:
        c = self.config
        if self.steps < c.learning_starts:
            return self.dom.random_actions(self.rng)
        t0 = time.perf_counter()
        params = self.actor.params(self.state) if self.actor else self.state.params.actor
        actions, self.act_keys = self.learner.act(params, jnp.asarray(self.obs), self.act_keys)
        actions = np.asarray(actions)
        self.timers["act_s"] += time.perf_counter() - t0
        return actions

    def collect_chunk(self, writers: SeedWriters) -> dict:
        """Steps the pool up to ``chunk_steps`` times; returns the staged chunk (rows after the
        budget or the last seed's threshold stay invalid)."""
        stage, ep = self.dom.new_stage(), self.episodes
        for k in range(self.config.chunk_steps):
            if not self.running():
                break
            actions = self.act()
            t0 = time.perf_counter()
            step, episodes = self.env.step(actions)
            self.timers["env_s"] += time.perf_counter() - t0
            self.recorder.add(self.obs, actions, self.dom.goal_step(self.env, step), ep.active)
            self.dom.stage_step(stage, k, self.obs, actions, step, ep.active)
            self.obs = step.obs
            # Lockstep seeds: every seed's env steps (or resets) together.
            if self.dom.counts_invalid_steps or step.valid[0, 0]:
                self.steps += 1
                ep.seed_steps += ep.active
            ep.finish(episodes, writers, self.base_step, self.task)
        return stage

    def learn_chunk(self, stage: dict) -> dict | None:
        """Writes the chunk to the buffer and runs its updates; returns the losses to log
        (None before ``learning_starts``, or while the first host-actor update is in flight)."""
        t0 = time.perf_counter()
        buffer = self.learner.add(self.device.buffer, self.to_device(stage))
        self.device = self.device._replace(buffer=buffer)
        info = None
        if self.steps >= self.config.learning_starts:
            if self.actor:
                self.actor.refresh(self.state)
            self.state, info = self.learner.update(
                self.state, buffer, self.device.pre, jnp.int32(self.grad_step),
                self.episodes.active)  # host bools: the learner picks its update by them
            before, self.grad_step = self.grad_step, self.grad_step + self.dom.updates_per_chunk()
            every = self.config.redo_every
            if self.learner.spec.redo and before // every != self.grad_step // every:
                new, counts = self.learner.redo(self.state, buffer, self.reset_keys())
                (self.state,) = self.gate_resets((new,), (self.state,), counts)
            if self.learner.spec.cbp:
                state, cbp, counts = self.learner.cbp(self.state, self.device.cbp, buffer,
                                                      self.reset_keys())
                self.state, cbp = self.gate_resets(
                    (state, cbp), (self.state, self.device.cbp), counts)
                self.device = self.device._replace(cbp=cbp)
            info, at = self.actor.swap(info, self.steps) if self.actor else (info, self.steps)
            if info is not None:
                info = jax.device_get(info)  # a few scalars
                check_finite(info, self.phase, self.task, at)
        self.timers["learn_s"] += time.perf_counter() - t0
        return info

    def reset_keys(self) -> jax.Array:
        """Per-seed keys ``[S]`` of a reset (ReDo, CBP) at the current gradient step."""
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.device.task_keys,
                                                                self.grad_step)

    def gate_resets(self, new: tuple, old: tuple, counts: dict) -> tuple:
        """Keeps ``old`` (trees with a seed axis) for the seeds past their success threshold,
        adds the other seeds' ``counts`` (``{net: [S]}``) of reset units to ``redo_resets``;
        returns the gated trees."""
        active = self.episodes.active
        if not active.all():
            mask = jnp.asarray(active)
            new = jax.tree.map(lambda n, o: jnp.where(
                mask.reshape(-1, *[1] * (n.ndim - 1)), n, o), new, old)
            counts = {k: jnp.where(mask, v, 0) for k, v in counts.items()}
        # Summed on the device: no host sync per chunk (read once, in the phase's summary).
        for net, n in counts.items():
            self.redo_resets[net] = self.redo_resets[net] + n
        return new

    def snapshot(self) -> tuple[DeviceState, HostState]:
        """The run as it stands mid-phase, to checkpoint."""
        device = self.device._replace(state=self.state, act_keys=self.act_keys,
                                      recorder=self.recorder.arrays())
        host = dataclasses.replace(self.host, steps=self.steps, grad_step=self.grad_step,
                                   recorder=self.recorder.host_state(),
                                   rng=self.rng.bit_generator.state,
                                   resets={k: np.asarray(v).tolist() for k, v in
                                           jax.device_get(self.redo_resets).items()},
                                   **self.episodes.host_fields())
        return device, host

    def checkpoint(self, ckpt: Checkpointer, writers: SeedWriters, t_start: float) -> None:
        writers.flush()
        device, host = self.snapshot()
        self.device, self.host = device, save(ckpt, device, host, writers.sizes(), t_start,
                                              self.phases)

    def close_env(self, writers: SeedWriters, t_start: float) -> None:
        """Ends the phase's training: closes the pool, checks the last losses, and at the end
        of phase 1 writes the fork point (other methods can start from here, paired with
        this run: ``config.fork_from``)."""
        self.env.close()
        if self.actor and self.actor.pending is not None:  # the last update's losses
            info, at = self.actor.pending
            check_finite(jax.device_get(info), self.phase, self.task, at)
        if self.phase == 0 and self.config.save_fork_point and not self.host.forked_from:
            fork_ckpt = Checkpointer(os.path.join(writers.workdir, FORK_POINT), max_to_keep=1)
            self.checkpoint(fork_ckpt, writers, t_start)
            fork_ckpt.close()

    def end_aux(self, ckpt: Checkpointer, writers: SeedWriters,
                t_start: float) -> tuple[DeviceState, HostState]:
        """Ends ANCL's auxiliary training: installs the pull toward the auxiliary agent (its
        parameters and Fishers on its recorded steps) into the held agent, which becomes the
        state again, and checkpoints the run at the start of the phase's main training."""
        c, learner = self.config, self.learner
        rec = self.recorder.result()
        keys = jax.vmap(lambda k: jax.random.fold_in(k, 17))(self.device.task_keys)
        main = learner.aux_end(self.device.held, self.state, jnp.asarray(rec.obs),
                               jnp.asarray(rec.action), jnp.asarray(rec.valid), keys)
        summary = {**self.training_summary(), "wall_s": time.perf_counter() - self.t_phase,
                   **self.timers}
        # The held slot keeps a copy (the update donates the state's buffers).
        device = self.device._replace(state=main, held=jax.tree.map(jnp.copy, main),
                                      act_keys=self.act_keys,
                                      recorder=new_recorder(c, self.dom).arrays())
        host = dataclasses.replace(
            self.host, stage="main", steps=0, restarts=0, grad_step=self.grad_step,
            resets=None, rng=self.rng.bit_generator.state,
            recorder=new_recorder(c, self.dom, 1).host_state(), aux_summary=summary)
        writers.flush()
        return device, save(ckpt, device, host, writers.sizes(), t_start, self.phases)

    def end(self, ckpt: Checkpointer, writers: SeedWriters,
            t_start: float) -> tuple[DeviceState, HostState]:
        """Scores neurons and installs masks, keeps transitions for replay, evaluates every
        task, and checkpoints the run at the start of the next phase."""
        c, learner, dom, phase = self.config, self.learner, self.dom, self.phase
        task_keys, score_keys, store_keys = jax.vmap(
            lambda k: tuple(jax.random.split(k, 3)))(self.device.task_keys)
        rec = self.recorder.result()
        change = jax.device_get(learner.change(self.state.params, self.params0))
        state, goal_kind, constant, plasticity = score_task(
            c, learner, self.state, rec, score_keys, writers.workdir, phase, self.task)
        for s, seed_metrics in enumerate(plasticity):
            for net, v in change.items():
                seed_metrics[net]["update_norm"] = float(v[s])
        writers.write_all(
            self.base_step + self.steps,
            {f"plasticity/{net}/{k}": np.array([p[net][k] for p in plasticity])
             for net in plasticity[0] for k in plasticity[0][net]}, task=self.task)
        drift, probes = probe_drift(c, learner, self.device.probes, state, rec, phase)
        pre = self.device.pre
        if learner.spec.replay and phase < len(self.phases) - 1:
            pre = learner.store(pre, self.device.buffer, store_keys, phase)
        evals = self.evaluate(state)
        if learner.spec.shrink_perturb and phase < len(self.phases) - 1:
            # After the evaluation: the next task starts from the shrunk, perturbed networks.
            sp_keys = jax.vmap(lambda k: jax.random.fold_in(k, 11))(store_keys)
            state = learner.task_switch(state, sp_keys, jnp.int32(phase))
        if learner.spec.inject and phase < len(self.phases) - 1:
            # Plasticity injection into the next task: new{phase} trains from now on.
            state = learner.task_switch(state, store_keys, jnp.int32(phase))
        sr_rows = self.host.sr_rows + ([[evals[t].tolist() for t in self.phases]]
                                       if evals else [])  # [H][S]
        summary = self.summary(evals, goal_kind, constant, drift, plasticity)
        device = self.device._replace(state=state, act_keys=self.act_keys, task_keys=task_keys,
                                      pre=pre, probes=probes,
                                      recorder=new_recorder(c, dom).arrays())
        host = dataclasses.replace(
            self.host, phase=phase + 1, steps=0, restarts=0, grad_step=self.grad_step, resets=None,
            stage="", aux_summary=None,
            rng=self.rng.bit_generator.state, recorder=new_recorder(c, dom, 1).host_state(),
            sr_rows=sr_rows, phases=self.host.phases + [summary],
            steps_to_threshold=list(self.episodes.steps_to_threshold))
        writers.flush()
        return device, save(ckpt, device, host, writers.sizes(), t_start, self.phases)

    def evaluate(self, state) -> dict:
        """Every task's ``sr`` entries ``[S]`` (Meta-World also: ``('last_step', task)``, the
        success at the episode's last step, and ``'sampled'``: this task with the training
        policy); empty with ``eval_episodes = 0``."""
        c, evals = self.config, {}
        if c.eval_episodes:
            for i, t in enumerate(c.tasks):
                evals[t], last = evaluate(self.learner, state.params.actor, t, c, i,
                                          last_step=True)
                if last is not None:
                    evals[("last_step", t)] = last
            if self.dom.metric == "asr":  # the same episodes with the sampled policy
                evals["sampled"] = evaluate(self.learner, state.params.actor, self.task, c,
                                            c.tasks.index(self.task), sampled=True)
        return evals

    def training_summary(self) -> dict:
        """Env steps (lockstep and per seed), steps to the success threshold, and the training
        success and return of each seed's last ``success_window`` episodes."""
        ep = self.episodes
        return {
            "env_steps": self.steps,
            "seed_env_steps": ep.seed_steps.tolist(),
            "steps_to_threshold": list(ep.steps_to_threshold),
            "train_success_rate": [float(np.mean(r)) if r else None for r in ep.recent],
            "episodic_return": [float(np.mean(r)) if r else None for r in ep.returns],
        }

    def summary(self, evals: dict, goal_kind: list, constant: list, drift,
                plasticity: list) -> dict:
        """The phase's entry of ``results.json['phases']``."""
        ep, name = self.episodes, self.dom.sr_name
        totals = jax.device_get(self.redo_resets)
        resets = [{k: int(v[s]) for k, v in totals.items()} for s in range(len(ep.recent))]
        return {
            "task": self.task,
            **self.training_summary(),
            f"eval_{name}": evals[self.task].tolist() if evals else None,
            f"eval_sampled_{name}": evals["sampled"].tolist() if "sampled" in evals else None,
            # Per seed, every task of the sequence scored at the episode's last step ([S][H]):
            # this phase's row of results.json's sr_last_step (Meta-World).
            "eval_last_step_sr": (
                np.array([evals[("last_step", t)] for t in self.phases]).T.tolist()
                if ("last_step", self.task) in evals else None),
            "wall_s": time.perf_counter() - self.t_phase,
            **self.timers,
            "goal_metric": goal_kind,
            # Per seed, {net/layer: units constant over the scoring window} and layer widths.
            "constant_units": constant,
            # Per seed, the policy's mean squared output change on each earlier task's probe
            # states since the end of that task (deterministic action for Meta-World).
            "actor_drift": drift,
            # Per seed, {net: {metric: value}} at the end of the phase's training: dormant-unit
            # fractions (tau 0 and 0.1), the last hidden layer's effective rank, the parameter
            # norm, and the norm of the parameters' change over the phase (since env step
            # `update_norm_from_step` when the phase was resumed). See method.plasticity.
            "plasticity": plasticity,
            "update_norm_from_step": self.resumed_at,
            # ReDo / CBP: per seed, units reset (replaced) per network during the phase
            # (since that step).
            "redo_resets": resets if self.learner.spec.redo else None,
            "cbp_replacements": resets if self.learner.spec.cbp else None,
            # ANCL: the auxiliary agent's training on this task before the main one (env
            # steps, training success and return of its last episodes, wall time), or None.
            "ancl_aux": self.host.aux_summary or None,
        }


def train_phase(config, learner: Learner, device: DeviceState, host: HostState, phases: list,
                writers: SeedWriters, progress, ckpt: Checkpointer,
                t_start: float) -> tuple[DeviceState, HostState]:
    """Trains the current phase from where the run stands to its end (logging losses, and
    checkpointing every ``checkpoint_every_s``), then ends it (:meth:`PhaseRun.end`). ANCL
    (``method='ancl'``) first trains its auxiliary agent on the phase's task
    (:meth:`PhaseRun.end_aux`) in every phase after the first."""
    if learner.spec.ancl and host.phase > 0 and host.stage == "":
        # The agent waits in `held`; a copy with fresh optimizers learns the task alone.
        device = device._replace(state=learner.aux_start(device.state),
                                 held=jax.tree.map(jnp.copy, device.state))
        host = dataclasses.replace(host, stage="aux")
    if host.stage == "aux":
        run = PhaseRun.start(config, learner, device, host, phases)
        _train(run, config, writers, progress, ckpt, t_start)
        device, host = run.end_aux(ckpt, writers, t_start)
    run = PhaseRun.start(config, learner, device, host, phases)
    _train(run, config, writers, progress, ckpt, t_start)
    return run.end(ckpt, writers, t_start)


def _train(run: PhaseRun, config, writers: SeedWriters, progress, ckpt: Checkpointer,
           t_start: float) -> None:
    """Runs ``run``'s chunks until its budget is spent or every seed met the threshold, then
    closes its envs."""
    last_log, last_save = run.steps, time.perf_counter()
    label = f"{run.task} ({run.phase + 1}/{len(run.phases)}){' aux' if run.aux else ''}"
    while run.running():
        info = run.learn_chunk(run.collect_chunk(writers))
        sps = (run.steps - run.steps0) / (time.perf_counter() - run.t_phase)
        if info is not None and run.steps - last_log >= config.log_every_steps:
            last_log = run.steps
            scalars = {f"{run.prefix}losses/{k}": v for k, v in info.items()}
            scalars[f"{run.prefix}charts/SPS"] = np.full(config.num_seeds, sps)
            writers.write_all(run.base_step + run.steps, scalars, task=run.task)
            writers.flush()
        progress.update(run.base_step + run.steps, label, sps,
                        run.dom.progress_text(run.episodes.recent, run.episodes.returns))
        if time.perf_counter() - last_save >= config.checkpoint_every_s:
            run.checkpoint(ckpt, writers, t_start)
            last_save = time.perf_counter()
    run.close_env(writers, t_start)
