"""Atari: discrete SAC (CleanRL ``sac_atari.py``) on EnvPool pools, frame-once replay.

See :mod:`nbsp_jax.domains.base` for the interface and the table of what differs from
Meta-World. The memory budget of the buffers is checked here, before anything is built.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nbsp_jax.agents import sac_discrete
from nbsp_jax.buffers import frames
from nbsp_jax.domains.base import with_injection
from nbsp_jax.envs.atari import NUM_ACTIONS, OBS_SHAPE, AtariSeedVecEnv, check_game
from nbsp_jax.metrics import canonical_atari_game, normalize_atari
from nbsp_jax.networks import CONV_IMPLS, hidden_widths
from nbsp_jax.types import Step


def bytes_per_seed(buffer_size: int, replay_store_size: int, num_phases: int) -> int:
    """Host/device bytes one seed's replay needs: the frame-once current-task buffer plus the
    earlier-task buffer (also frame-once) over ``num_phases - 1`` stored tasks."""
    stored = replay_store_size * max(num_phases - 1, 1)
    return frames.buffer_bytes(buffer_size) + frames.buffer_bytes(stored)


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(buffer_size: int, replay_store_size: int, num_phases: int, num_seeds: int,
                 budget: float = 0.8) -> int:
    """Raises ValueError, with the estimate, if the replay of all seeds would not fit in
    ``budget`` of physical memory; returns the estimate in bytes otherwise."""
    need = num_seeds * bytes_per_seed(buffer_size, replay_store_size, num_phases)
    have = machine_memory_bytes()
    if need > budget * have:
        raise ValueError(
            f"the replay buffers need about {need / 2**30:.1f} GiB ({num_seeds} seeds x "
            f"{bytes_per_seed(buffer_size, replay_store_size, num_phases) / 2**30:.2f} GiB: "
            f"buffer_size={buffer_size}, replay_store_size={replay_store_size} x "
            f"{max(num_phases - 1, 1)} earlier tasks), more than {budget:.0%} of this "
            f"machine's {have / 2**30:.1f} GiB; lower num_seeds or buffer_size"
        )
    return need


class Atari:
    """Discrete SAC (CleanRL ``sac_atari.py``) on EnvPool Atari with frame-once replay."""

    name = "atari"
    metric = "ar"
    sr_name = "normalized_return"
    goal = "return"
    obs_shape, obs_dtype = (frames.STACK, *frames.FRAME_SHAPE), np.uint8
    action_shape, action_dtype = (), np.int32
    critic_takes_action = False  # Q(s) -> one value per action
    # No drift probes: 1000 frame stacks per task would cost 28 MB per seed and task.
    probe_action = None
    # Conv feature maps of T = 1e4 frames would need gigabytes; record 256 frames at a time.
    record_chunk = 256
    # EnvPool's reset step after a game over is a real step of the pool; Atari games differ in
    # length across envs, so every pool step counts towards the budget.
    counts_invalid_steps = True

    def __init__(self, config):
        self.config = config

    @staticmethod
    def validate(c) -> None:
        """Known games (with the list), Table 7 scores, ``alpha_logp``, the conv
        implementation, and the memory of the buffers."""
        for game in c.tasks:
            canonical_atari_game(check_game(game))  # evaluation normalises by Table 7
        if c.alpha_logp != "reuse":
            raise ValueError(
                f"config.alpha_logp={c.alpha_logp!r}: discrete SAC's temperature loss takes "
                "the actor step's probabilities (CleanRL sac_atari); valid choices: ('reuse',)")
        if c.conv_impl not in CONV_IMPLS:
            raise ValueError(
                f"unknown config.conv_impl {c.conv_impl!r}; valid choices: {CONV_IMPLS}")
        check_memory(c.buffer_size, c.replay_store_size, len(c.tasks) * c.cycles, c.num_seeds)

    def make_agent(self, actor_opt, q_opt) -> sac_discrete.SACDiscrete:
        c = self.config
        return with_injection(sac_discrete.make_sac_discrete(
            OBS_SHAPE, NUM_ACTIONS, hidden=hidden_widths(c.hidden, c.activation),
            activation=c.activation, policy_lr=c.policy_lr, q_lr=c.q_lr,
            gamma=c.gamma, batch_size=c.batch_size, actor_opt=actor_opt, q_opt=q_opt,
            target_every=self.target_every(), conv_impl=c.conv_impl,
        ), c)

    def adam(self, lr: float):
        return optax.adam(lr, eps=1e-4)  # CleanRL sac_atari's eps

    def target_every(self) -> int:
        """Gradient steps between hard target copies (8000 env steps / 4 = 2000)."""
        c = self.config
        return max(c.target_update_every // (c.update_every // c.updates_per_step), 1)

    # The agent's module; looked up at call time (tests patch its functions).
    agent_module = sac_discrete

    def init_state(self, agent, key):
        return self.agent_module.init_state(agent, key)

    def update_many(self, agent, state, sampler, num_updates, step0):
        return self.agent_module.update_many(agent, state, sampler, num_updates, step0)

    @staticmethod
    def sample_action(agent, actor_params, obs, key):
        return sac_discrete.sample_action(agent, actor_params, obs, key)

    @staticmethod
    def eval_action(agent, actor_params, obs, key):
        """Atari evaluates the stochastic policy: an argmax policy can stall forever (e.g. a
        game that waits for FIRE), which the time limit would then score."""
        return sac_discrete.sample_action(agent, actor_params, obs, key)

    def _stream_capacity(self, transitions: int) -> int:
        return -(-transitions // self.config.num_envs)

    def init_buffer(self):
        """One frame-once stream per env: fields ``[E, rows, ...]``."""
        cap = self._stream_capacity(self.config.buffer_size)
        return jax.vmap(lambda _: frames.init(cap))(jnp.arange(self.config.num_envs))

    def init_pre(self, stored_tasks: int):
        """One window per (earlier task, env): ``stored_tasks * E`` streams (one tiny stream
        when 0)."""
        n = max(stored_tasks, 1) * self.config.num_envs
        cap = self._stream_capacity(self.config.replay_store_size) if stored_tasks else 1
        return jax.vmap(lambda _: frames.init(cap))(jnp.arange(n))

    @staticmethod
    def add(buffer, rows: dict):
        """Writes one seed's staged chunk in time order (``rows`` fields ``[K, E, ...]``)."""

        def one_step(buf, r):
            add = jax.vmap(frames.add, in_axes=(0, 0, 0, 0, 0, 0, None))
            return add(buf, r["frame"][:, None], r["action"], r["reward"], r["terminated"],
                       r["valid"], r["keep"]), None

        return jax.lax.scan(one_step, buffer, rows)[0]

    @staticmethod
    def sampler(agent, buffer):
        return frames.streams_sampler(buffer, agent.batch_size)

    @staticmethod
    def nonempty(buffer):
        return frames.num_transitions_streams(buffer) > 0

    def store(self, pre, buffer, key, slot):
        """Copies a window of ``replay_store_size / E`` consecutive frames of each env's
        stream (uniform offset) into the streams of earlier task ``slot``."""
        e = self.config.num_envs
        length = self._stream_capacity(self.config.replay_store_size)
        keys = jax.random.split(key, e)
        wins = jax.vmap(lambda b, k: frames.window(b, k, length))(buffer, keys)
        return jax.tree.map(
            lambda p, w: jax.lax.dynamic_update_slice_in_dim(p, w.astype(p.dtype), slot * e, 0),
            pre, wins)

    def make_env(self, task: str, num_envs: int, seed: int, train: bool = True):
        c = self.config
        # Training: CleanRL's episodic life and reward clipping; evaluation: whole games.
        return AtariSeedVecEnv(task, c.num_seeds, num_envs, seed, episodic_life=train,
                               reward_clip=train, max_episode_steps=c.max_episode_steps)

    def random_actions(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        return rng.integers(0, NUM_ACTIONS, (c.num_seeds, c.num_envs)).astype(np.int32)

    def new_stage(self) -> dict:
        c = self.config
        shape = (c.chunk_steps, c.num_seeds, c.num_envs)
        return {
            "frame": np.zeros((*shape, 84, 84), np.uint8),
            "action": np.zeros(shape, np.int32),
            "reward": np.zeros(shape, np.float32),
            "terminated": np.zeros(shape, np.float32),
            "valid": np.zeros(shape, bool),
            "keep": np.zeros(shape[:2], bool),
        }

    @staticmethod
    def stage_step(stage: dict, k: int, obs, actions, step: Step, active: np.ndarray) -> None:
        # Only the newest frame of the returned stack is new; on a reset step (valid False)
        # it starts an episode in the buffer.
        stage["frame"][k] = step.obs[:, :, -1]
        stage["action"][k], stage["reward"][k] = actions, step.reward
        stage["terminated"][k], stage["valid"][k] = step.terminated, step.valid
        stage["keep"][k] = active

    @staticmethod
    def to_seed_rows(x: np.ndarray) -> np.ndarray:
        """``[K, S, ...] -> [S, K, ...]``: frames must stay in time order per env."""
        return np.swapaxes(x, 0, 1)

    def start_episode_rows(self, obs):
        """A chunk whose first row writes the reset observations as first frames (the other
        rows write nothing; a full-size chunk, so ``add`` compiles once)."""
        stage = self.new_stage()
        stage["frame"][0], stage["keep"][0] = obs[:, :, -1], True
        return stage

    @staticmethod
    def goal_step(env, step: Step) -> Step:
        """Goal = raw return of whole games: raw rewards, episodes end at game over only."""
        game_over = env.game_over
        return step._replace(reward=env.raw_reward, terminated=game_over,
                             truncated=np.zeros_like(game_over))

    def eval_score(self, task: str, per_env: np.ndarray) -> np.ndarray:
        """Human-normalised mean raw return per seed (Table 7) from returns ``[S, n]``."""
        return normalize_atari(task, per_env.mean(axis=1))

    def updates_per_chunk(self) -> int:
        c = self.config
        return c.chunk_steps * c.num_envs * c.updates_per_step // c.update_every

    def progress_text(self, recent, returns) -> str:
        return " ".join(f"{np.mean(r):.1f}" if r else "nan" for r in returns)
