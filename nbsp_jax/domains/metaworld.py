"""Meta-World v3: continuous SAC on EnvPool (or metaworld-package) pools, transition replay.

See :mod:`nbsp_jax.domains.base` for the interface and the table of what differs from Atari.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from nbsp_jax.agents import sac
from nbsp_jax.buffers import transitions
from nbsp_jax.domains.base import with_injection
from nbsp_jax.envs.metaworld import ACTION_DIM, BACKENDS, OBS_DIM, SeedVecEnv, check_task
from nbsp_jax.layout import seed_major
from nbsp_jax.networks import LOG_STD_MAX, LOG_STD_MIN, hidden_widths
from nbsp_jax.types import Step, Transition


class MetaWorld:
    """Continuous SAC on EnvPool (or metaworld-package) Meta-World v3."""

    name = "metaworld"
    metric = "asr"  # name of the average-performance metric in results
    sr_name = "success_rate"  # what an sr entry is
    goal = "success"  # goal metric of the neuron scores (return when success is constant)
    obs_shape, obs_dtype = (OBS_DIM,), np.float32
    action_shape, action_dtype = (ACTION_DIM,), np.float32
    critic_takes_action = True
    record_chunk = None  # small MLPs: record all T steps at once
    counts_invalid_steps = False

    def __init__(self, config):
        self.config = config

    @staticmethod
    def validate(c) -> None:
        """Known task names (with the list), the env backend, and updates per chunk that are
        a multiple of the delayed policy period."""
        if c.env_backend not in BACKENDS:
            raise ValueError(
                f"unknown config.env_backend {c.env_backend!r}; valid choices: {BACKENDS}")
        for task in c.tasks:
            check_task(task)
        n_updates = c.chunk_steps * c.num_envs * c.updates_per_step // c.update_every
        if n_updates % c.policy_frequency:
            raise ValueError(
                f"updates per chunk (chunk_steps * num_envs * updates_per_step = {n_updates}) "
                f"must be a multiple of config.policy_frequency={c.policy_frequency}")

    # ---- agent (one seed, jitted) ----
    def make_agent(self, actor_opt, q_opt) -> sac.SAC:
        c = self.config
        return with_injection(sac.make_sac(
            OBS_DIM, ACTION_DIM, hidden=hidden_widths(c.hidden, c.activation),
            activation=c.activation, policy_lr=c.policy_lr, q_lr=c.q_lr,
            gamma=c.gamma, tau=c.tau, policy_frequency=c.policy_frequency,
            batch_size=c.batch_size, actor_opt=actor_opt, q_opt=q_opt,
            alpha_logp=c.alpha_logp,
        ), c, actor_post=clip_log_std)

    def adam(self, lr: float):
        return optax.adam(lr)

    # The agent's module; looked up at call time (tests patch its functions).
    agent_module = sac

    def init_state(self, agent, key):
        return self.agent_module.init_state(agent, key)

    def update_many(self, agent, state, sampler, num_updates, step0):
        return self.agent_module.update_many(agent, state, sampler, num_updates, step0)

    @staticmethod
    def sample_action(agent, actor_params, obs, key):
        return sac.sample_action(agent, actor_params, obs, key)[0]

    @staticmethod
    def eval_action(agent, actor_params, obs, key):
        """Meta-World evaluates the deterministic policy (tanh of the mean)."""
        return sac.deterministic_action(agent, actor_params, obs)

    @staticmethod
    def probe_action(agent, actor_params, obs):
        """The policy output whose drift on earlier tasks' states is logged: ``tanh(mean)``."""
        return sac.deterministic_action(agent, actor_params, obs)

    # ---- buffers (one seed, jitted) ----
    def init_buffer(self):
        return transitions.init_buffer(self.config.buffer_size, OBS_DIM, ACTION_DIM)

    def init_pre(self, stored_tasks: int):
        """Earlier-task buffer for ``stored_tasks`` tasks (capacity 1 when 0: never filled,
        so that every method runs the same compiled update)."""
        return transitions.init_buffer(max(self.config.replay_store_size * stored_tasks, 1),
                                  OBS_DIM, ACTION_DIM)

    @staticmethod
    def add(buffer, rows: dict):
        """Writes one seed's staged chunk (``rows`` from :meth:`stage_step`, ``[K * E, ...]``)."""
        batch = Transition(rows["obs"], rows["action"], rows["reward"], rows["next_obs"],
                           rows["terminated"])
        return transitions.add(buffer, batch, rows["valid"])

    @staticmethod
    def sampler(agent, buffer):
        return transitions.sampler(buffer, agent.batch_size)

    @staticmethod
    def nonempty(buffer):
        return buffer.size > 0

    def store(self, pre, buffer, key, slot):
        """Appends ``replay_store_size`` uniform draws from ``buffer`` to ``pre`` (``slot``
        unused: one buffer for all earlier tasks)."""
        return transitions.store_for_replay(pre, buffer, key, self.config.replay_store_size)

    # ---- host ----
    def make_env(self, task: str, num_envs: int, seed: int, train: bool = True):
        return SeedVecEnv(task, self.config.num_seeds, num_envs, seed, self.config.env_backend)

    def random_actions(self, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        return rng.uniform(-1.0, 1.0, (c.num_seeds, c.num_envs, ACTION_DIM)).astype(np.float32)

    def new_stage(self) -> dict:
        """Host arrays for one chunk, ``[K, S, E, ...]``."""
        c = self.config
        shape = (c.chunk_steps, c.num_seeds, c.num_envs)
        return {
            "obs": np.zeros((*shape, OBS_DIM), np.float32),
            "action": np.zeros((*shape, ACTION_DIM), np.float32),
            "reward": np.zeros(shape, np.float32),
            "next_obs": np.zeros((*shape, OBS_DIM), np.float32),
            "terminated": np.zeros(shape, np.float32),
            "valid": np.zeros(shape, bool),
        }

    @staticmethod
    def stage_step(stage: dict, k: int, obs, actions, step: Step, active: np.ndarray) -> None:
        stage["obs"][k], stage["action"][k] = obs, actions
        stage["reward"][k], stage["next_obs"][k] = step.reward, step.obs
        stage["terminated"][k] = step.terminated
        # A seed that met the success threshold stores nothing more (SPEC section 6).
        stage["valid"][k] = step.valid & active[:, None]

    @staticmethod
    def to_seed_rows(x: np.ndarray) -> np.ndarray:
        """``[K, S, E, ...] -> [S, K * E, ...]``: transitions need no time order."""
        return seed_major(x)

    def start_episode_rows(self, obs):
        """Rows to write after a reset (none: a transition holds both observations)."""
        return None

    @staticmethod
    def goal_step(env, step: Step) -> Step:
        """The step as the goal recorder sees it (Meta-World: as is)."""
        return step

    def eval_score(self, task: str, per_env: np.ndarray) -> np.ndarray:
        """``sr`` entries per seed from per-episode outcomes ``[S, n]`` (success)."""
        return per_env.mean(axis=1)

    def updates_per_chunk(self) -> int:
        c = self.config
        return c.chunk_steps * c.num_envs * c.updates_per_step

    def progress_text(self, recent, returns) -> str:
        return " ".join(f"{np.mean(r):.2f}" if r else "nan" for r in recent)


def clip_log_std(out):
    """An injected actor's ``(mean, log_std)`` with the summed log-std clipped back into
    CleanRL's bounds (each part's lies within them; their sum need not)."""
    mean, log_std = out
    return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

