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

from nbsp_jax import replay, sac
from nbsp_jax.config import validate
from nbsp_jax.envs import ACTION_DIM, OBS_DIM, SeedVecEnv
from nbsp_jax.logs import Progress, SeedWriters


class Learner(NamedTuple):
    """Jitted, seed-vmapped functions of one agent (built once per run)."""

    agent: sac.SAC
    act: callable  # (actor_params [S], obs [S,E,D], keys [S]) -> (actions [S,E,A], keys [S])
    act_det: callable  # (actor_params [S], obs [S,E,D]) -> actions [S,E,A]
    add: callable  # (buffer [S], batch [S,B,...], valid [S,B]) -> buffer [S]
    update: callable  # (state [S], buffer [S], step0) -> (state [S], info {k: [S]})


def make_learner(config: ml_collections.ConfigDict) -> Learner:
    """Builds the agent and its jitted, vmapped step functions from ``config``."""
    agent = sac.make_sac(
        OBS_DIM, ACTION_DIM, hidden=config.hidden, policy_lr=config.policy_lr,
        q_lr=config.q_lr, gamma=config.gamma, tau=config.tau,
        policy_frequency=config.policy_frequency, batch_size=config.batch_size,
    )
    num_updates = config.chunk_steps * config.num_envs * config.updates_per_step

    def act(actor_params, obs, key):
        key, sub = jax.random.split(key)
        return sac.sample_action(agent, actor_params, obs, sub)[0], key

    def update(state, buffer, step0):
        sampler = sac.buffer_sampler(agent, buffer)
        return sac.update_many(agent, state, sampler, num_updates, step0)

    return Learner(
        agent=agent,
        act=jax.jit(jax.vmap(act)),
        act_det=jax.jit(jax.vmap(functools.partial(sac.deterministic_action, agent))),
        add=jax.jit(jax.vmap(replay.add), donate_argnums=0),
        update=jax.jit(jax.vmap(update, in_axes=(0, 0, None)), donate_argnums=0),
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


def _to_seed_major(x: np.ndarray) -> jax.Array:
    """``[K, S, E, ...] -> [S, K*E, ...]`` on the device."""
    x = np.swapaxes(x, 0, 1)
    return jnp.asarray(x.reshape(x.shape[0], -1, *x.shape[3:]))


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
                batch = replay.Transition(*(_to_seed_major(stage[f]) for f in
                                            ("obs", "action", "reward", "next_obs",
                                             "terminated")))
                buffer = learner.add(buffer, batch, _to_seed_major(stage["valid"]))
                if steps >= config.learning_starts:
                    state, info = learner.update(state, buffer, jnp.int32(grad_step))
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
            entry = {
                "task": task,
                "env_steps": steps,
                "train_success_rate": [float(np.mean(r)) if r else None for r in recent],
                "episodic_return": [float(np.mean(r)) if r else None for r in returns],
                "wall_s": time.perf_counter() - t_phase,
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
