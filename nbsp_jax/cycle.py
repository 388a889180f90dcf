"""The training loop: tasks in order, seeds vmapped, env stepping on the host.

Python loops run only over tasks and chunks. Per chunk of ``chunk_steps`` env steps, actions come
from one jitted, seed-vmapped policy call per step; the chunk's transitions are then written to
the device-resident buffer in one call and ``chunk_steps * num_envs * updates_per_step`` gradient
updates run in one jitted ``lax.scan`` (:func:`nbsp_jax.sac.update_many`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import deque
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nbsp_jax import nbsp, replay, sac
from nbsp_jax.config import validate
from nbsp_jax.envs import ACTION_DIM, OBS_DIM, SeedVecEnv, seed_major
from nbsp_jax.logs import Progress, SeedWriters
from nbsp_jax.masking import masked_scale
from nbsp_jax.recorder import GoalRecorder


class Learner(NamedTuple):
    """Jitted, seed-vmapped functions of one agent (built once per run). Shapes: ``[S, ...]``."""

    agent: sac.SAC
    spec: nbsp.MethodSpec
    act: callable  # (actor_params, obs [S,E,D], keys) -> (actions [S,E,A], keys)
    act_det: callable  # (actor_params, obs [S,E,D]) -> actions [S,E,A]
    add: callable  # (buffer, batch [S,B,...], valid [S,B]) -> buffer
    update: callable  # (state, buffer, pre_buffer, step0) -> (state, info {k: [S]})
    end_task: callable  # (state, obs, action, goal, valid, keys) -> (state, scores, masks, skill)
    store: callable  # (pre_buffer, buffer, keys) -> pre_buffer


def make_learner(config: ml_collections.ConfigDict) -> Learner:
    """Builds the agent and its jitted, vmapped step functions from ``config``."""
    spec = nbsp.method_spec(config.method)
    masked = lambda lr: optax.chain(optax.adam(lr), masked_scale()) if spec.masks else None
    agent = sac.make_sac(
        OBS_DIM, ACTION_DIM, hidden=config.hidden, policy_lr=config.policy_lr,
        q_lr=config.q_lr, gamma=config.gamma, tau=config.tau,
        policy_frequency=config.policy_frequency, batch_size=config.batch_size,
        actor_opt=masked(config.policy_lr), q_opt=masked(config.q_lr),
    )
    num_updates = config.chunk_steps * config.num_envs * config.updates_per_step

    def act(actor_params, obs, key):
        key, sub = jax.random.split(key)
        return sac.sample_action(agent, actor_params, obs, sub)[0], key

    def update(state, buffer, pre, step0):
        if spec.replay:
            sampler = nbsp.replay_sampler(agent, buffer, pre, config.replay_interval)
        else:
            sampler = sac.buffer_sampler(agent, buffer)
        return sac.update_many(agent, state, sampler, num_updates, step0)

    def end_task(state, obs, action, goal, valid, key):
        scores, rank = nbsp.score_networks(agent, state, obs, action, goal, valid, key,
                                           config.selector)
        masks, skill = nbsp.build_masks(scores, rank, config.skill_proportion,
                                        config.mask_alpha, spec.hard)
        if spec.masks:
            state = nbsp.install_masks(state, masks, config.mask_target, config.mask_policy)
        return state, scores, masks, skill

    store = lambda pre, buf, key: nbsp.store_for_replay(pre, buf, key, config.replay_store_size)
    return Learner(
        agent=agent,
        spec=spec,
        act=jax.jit(jax.vmap(act)),
        act_det=jax.jit(jax.vmap(functools.partial(sac.deterministic_action, agent))),
        add=jax.jit(jax.vmap(replay.add), donate_argnums=0),
        update=jax.jit(jax.vmap(update, in_axes=(0, 0, 0, None)), donate_argnums=0),
        end_task=jax.jit(jax.vmap(end_task)),
        store=jax.jit(jax.vmap(store), donate_argnums=0),
    )


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """Per-seed PRNG keys ``[S]``: seed ``s`` of the axis uses ``fold_in(key(seed), s)``."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(num_seeds))


def env_seed(config, task_index: int, purpose: int = 0) -> int:
    """Base env seed of a pool; pools of different runs, tasks and purposes do not overlap."""
    return (config.seed * 1_000 + task_index * 10 + purpose) * 10_000


def evaluate(learner: Learner, actor_params, task: str, config, task_index: int) -> np.ndarray:
    """Success rate per seed ``[S]`` of the deterministic policy over ``eval_episodes``.

    One pool of ``S * eval_episodes`` envs runs one episode each (success = any step
    succeeded), vmapped over seeds.
    """
    n = config.eval_episodes
    env = SeedVecEnv(task, config.num_seeds, n, env_seed(config, task_index, 1),
                     config.env_backend)
    obs = env.reset()
    success = np.zeros((config.num_seeds, n), bool)
    finished = np.zeros((config.num_seeds, n), bool)
    while not finished.all():
        actions = np.asarray(learner.act_det(actor_params, jnp.asarray(obs)))
        step, _ = env.step(actions)
        success |= step.success & ~finished
        finished |= step.valid & (step.terminated | step.truncated)
        obs = step.obs
    env.close()
    return success.mean(axis=1)


def _stage(config) -> dict:
    k, s, e = config.chunk_steps, config.num_seeds, config.num_envs
    return {
        "obs": np.zeros((k, s, e, OBS_DIM), np.float32),
        "action": np.zeros((k, s, e, ACTION_DIM), np.float32),
        "reward": np.zeros((k, s, e), np.float32),
        "next_obs": np.zeros((k, s, e, OBS_DIM), np.float32),
        "terminated": np.zeros((k, s, e), np.float32),
        "valid": np.zeros((k, s, e), bool),
    }


def _device_seed_major(x: np.ndarray) -> jax.Array:
    return jnp.asarray(seed_major(x))


def prepare_workdir(workdir: str, config) -> None:
    """Creates ``workdir`` and writes ``config.json``; refuses a workdir holding another run."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        what = f"a run with different fields {diff}" if diff else "a run of this same config"
        raise FileExistsError(
            f"workdir {workdir!r} already holds {what}; refusing to overwrite it. "
            "Choose a new --workdir or delete the old one."
        )
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config.num_seeds`` seeds on ``config.tasks`` (x ``cycles``) and evaluates.

    Args:
      config: a validated-on-entry config (see :mod:`nbsp_jax.config`).
      workdir: output folder: ``config.json``, ``summary.json``, per-seed metrics.

    Returns:
      A summary dict: per phase, per seed final training success rate (last
      ``success_window`` episodes), mean episodic return and evaluation success rate, and the
      final parameters under ``'state'`` (not written to disk).
    """
    validate(config)
    prepare_workdir(workdir, config)
    learner = make_learner(config)
    S, E, K = config.num_seeds, config.num_envs, config.chunk_steps
    keys = seed_keys(config.seed, S)
    init_keys, act_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    state = jax.vmap(functools.partial(sac.init_state, learner.agent))(init_keys)
    rng = np.random.default_rng(config.seed)
    writers = SeedWriters(workdir, S)
    phases = [t for _ in range(config.cycles) for t in config.tasks]
    progress = Progress(len(phases) * config.steps_per_task, config.progress)
    summary = {"phases": [], "num_seeds": S}
    # One buffer of transitions from all earlier tasks (Eq. 8); capacity 1 (never filled) when
    # the method does not replay, so every method runs the same compiled update.
    pre_capacity = config.replay_store_size * (len(phases) - 1) if learner.spec.replay else 1
    pre_buffer = jax.vmap(lambda _: replay.init_buffer(max(pre_capacity, 1), OBS_DIM,
                                                       ACTION_DIM))(jnp.arange(S))
    task_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    grad_step = 0
    t_start = time.perf_counter()
    try:
        for phase, task in enumerate(phases):
            task_index = config.tasks.index(task)
            # The current-task buffer starts empty at each task (SPEC section 5).
            buffer = jax.vmap(lambda _: replay.init_buffer(config.buffer_size, OBS_DIM,
                                                           ACTION_DIM))(jnp.arange(S))
            env = SeedVecEnv(task, S, E, env_seed(config, task_index) + phase, config.env_backend)
            obs = env.reset()
            recorder = GoalRecorder(-(-config.score_steps // E), S, E, OBS_DIM, ACTION_DIM)
            recent = [deque(maxlen=config.success_window) for _ in range(S)]
            returns = [deque(maxlen=config.success_window) for _ in range(S)]
            steps = 0  # valid env steps per seed in this phase
            last_log, t_phase, info = 0, time.perf_counter(), None
            while steps < config.steps_per_task:
                stage = _stage(config)
                for k in range(K):
                    if steps == config.steps_per_task:
                        break  # budget reached mid-chunk: the remaining rows stay invalid
                    if steps < config.learning_starts:
                        actions = rng.uniform(-1.0, 1.0, (S, E, ACTION_DIM)).astype(np.float32)
                    else:
                        actions, act_keys = learner.act(state.params.actor, jnp.asarray(obs),
                                                        act_keys)
                        actions = np.asarray(actions)
                    step, episodes = env.step(actions)
                    recorder.add(obs, actions, step)
                    stage["obs"][k], stage["action"][k] = obs, actions
                    stage["reward"][k], stage["next_obs"][k] = step.reward, step.obs
                    stage["terminated"][k], stage["valid"][k] = step.terminated, step.valid
                    obs = step.obs
                    # Lockstep seeds: every seed's env steps (or resets) together.
                    steps += int(step.valid[0, 0])
                    for s, ret, succ in zip(episodes.seed, episodes.ret, episodes.success,
                                            strict=True):
                        recent[s].append(float(succ))
                        returns[s].append(float(ret))
                        writers.write(int(s), phase * config.steps_per_task + steps,
                                      {"charts/episodic_return": ret,
                                       "charts/success_rate": np.mean(recent[s])}, task=task)
                batch = replay.Transition(*(_device_seed_major(stage[f]) for f in
                                            ("obs", "action", "reward", "next_obs",
                                             "terminated")))
                buffer = learner.add(buffer, batch, _device_seed_major(stage["valid"]))
                if steps >= config.learning_starts:
                    state, info = learner.update(state, buffer, pre_buffer,
                                                 jnp.int32(grad_step))
                    grad_step += K * E * config.updates_per_step
                global_step = phase * config.steps_per_task + steps
                sps = steps / (time.perf_counter() - t_phase)
                if steps - last_log >= config.log_every_steps and info is not None:
                    last_log = steps
                    info = jax.device_get(info)
                    scalars = {f"losses/{k}": v for k, v in info.items()}
                    scalars["charts/SPS"] = np.full(S, sps)
                    writers.write_all(global_step, scalars, task=task)
                    writers.flush()
                sr = [np.mean(r) if r else float("nan") for r in recent]
                progress.update(global_step, f"{task} ({phase + 1}/{len(phases)})", sps,
                                " ".join(f"{x:.2f}" for x in sr))
            env.close()
            task_keys, score_keys, store_keys = jax.vmap(
                lambda k: tuple(jax.random.split(k, 3)))(task_keys)
            state, goal_kind = _end_of_task(learner, state, recorder, score_keys, workdir,
                                            phase, task)
            if learner.spec.replay and phase < len(phases) - 1:
                pre_buffer = learner.store(pre_buffer, buffer, store_keys)
            del buffer
            entry = {
                "task": task,
                "env_steps": steps,
                "train_success_rate": [float(np.mean(r)) if r else None for r in recent],
                "episodic_return": [float(np.mean(r)) if r else None for r in returns],
                "wall_s": time.perf_counter() - t_phase,
                "goal_metric": goal_kind,
            }
            if config.eval_episodes:
                entry["eval_success_rate"] = evaluate(
                    learner, state.params.actor, task, config, task_index).tolist()
            summary["phases"].append(entry)
            writers.flush()
    finally:
        progress.close()
        writers.close()
    summary["wall_s"] = time.perf_counter() - t_start
    summary["versions"] = library_versions()
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    summary["state"] = state
    return summary


def _end_of_task(learner: Learner, state, recorder: GoalRecorder, keys, workdir: str,
                 phase: int, task: str):
    """Scores neurons on the task's last recorded steps, installs masks, saves them as .npz.

    The goal metric is episode success; a seed whose recorded success is constant (all
    episodes succeeded, or none) carries no goal information, so that seed falls back to the
    episode return, a graded metric (SPEC section 3), and the switch is logged.

    Returns:
      The new state and, per seed, the goal metric used (``'success'`` or ``'return'``).
    """
    rec = recorder.result()
    goal = rec.success.copy()
    kinds = []
    for s in range(goal.shape[0]):
        v = rec.valid[s]
        if v.any() and goal[s][v].min() == goal[s][v].max():
            print(f"[nbsp] seed {s}, task {task}: episode success is constant "
                  f"({goal[s][v].max():.0f}) over the {v.sum()} recorded steps; scoring with "
                  "episode return instead")
            goal[s] = rec.ret[s]
            kinds.append("return")
        else:
            kinds.append("success")
    state, scores, masks, skill = learner.end_task(
        state, jnp.asarray(rec.obs), jnp.asarray(rec.action), jnp.asarray(goal),
        jnp.asarray(rec.valid), keys)
    arrays = {"goal_metric_is_return": np.array([k == "return" for k in kinds])}
    for name, tree in (("score", scores), ("mask", masks), ("skill", skill)):
        for net, layers in tree.items():
            for layer, value in layers.items():
                arrays[f"{net}/{layer}/{name}"] = np.asarray(value)
    os.makedirs(os.path.join(workdir, "neurons"), exist_ok=True)
    np.savez(os.path.join(workdir, "neurons", f"phase{phase + 1:02d}_{task}.npz"), **arrays)
    return state, kinds


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
