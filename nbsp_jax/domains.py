"""The two domains of the paper behind one interface, so the training loop has one code path.

===============  ==================================  =====================================
\                Meta-World (``agent='sac'``)        Atari (``agent='sac_atari'``)
===============  ==================================  =====================================
agent            continuous SAC (:mod:`~.sac`)       discrete SAC (:mod:`~.sac_discrete`)
observation      float32 ``[39]``                    uint8 ``[4, 84, 84]``
action           float32 ``[4]``                     int32 ``[]`` (18 actions)
buffer per seed  transitions (:mod:`~.replay`)       a frame-once stream per env
                                                     (:mod:`~.atari_replay`)
earlier tasks    one buffer, 1e5 uniform draws per   per task and env, a window of
                 task                                consecutive frames (uniform offset)
goal metric      episode success (return if          raw return of the whole game
                 constant)
evaluation       success rate, deterministic policy  normalised raw return, sampled policy
metric names     ``asr``, ``fm``, ``fwt``            ``ar``, ``fm``, ``fwt``
===============  ==================================  =====================================

The jitted parts (``make_agent``, ``init_buffer``, ``add``, ``sampler``, ``store``) are for one
seed; the loop vmaps them. The host parts (``make_env``, staging, random actions) see the whole
``[S, E]`` pool. Masking, scoring, replay cadence and every method switch are shared code
(:mod:`nbsp_jax.nbsp`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax import atari_replay, metrics, nbsp, replay, sac, sac_discrete
from nbsp_jax.envs import ACTION_DIM, OBS_DIM, SeedVecEnv, Step


def get_domain(config):
    """The :class:`MetaWorld` or :class:`Atari` domain of ``config.agent``."""
    if config.agent == "sac_atari":
        return Atari(config)
    return MetaWorld(config)


class MetaWorld:
    """Continuous SAC on EnvPool (or metaworld-package) Meta-World v3."""

    name = "metaworld"
    metric = "asr"  # name of the average-performance metric in results
    sr_name = "success_rate"  # what an sr entry is
    goal = "success"  # goal metric of the neuron scores (return when success is constant)
    obs_shape, obs_dtype = (OBS_DIM,), np.float32
    action_shape, action_dtype = (ACTION_DIM,), np.float32
    record_chunk = None  # small MLPs: record all T steps at once
    counts_invalid_steps = False

    def __init__(self, config):
        self.config = config

    # ---- agent (one seed, jitted) ----
    def make_agent(self, actor_opt, q_opt) -> sac.SAC:
        c = self.config
        return sac.make_sac(
            OBS_DIM, ACTION_DIM, hidden=c.hidden, policy_lr=c.policy_lr, q_lr=c.q_lr,
            gamma=c.gamma, tau=c.tau, policy_frequency=c.policy_frequency,
            batch_size=c.batch_size, actor_opt=actor_opt, q_opt=q_opt,
        )

    def adam(self, lr: float):
        import optax

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
        return replay.init_buffer(self.config.buffer_size, OBS_DIM, ACTION_DIM)

    def init_pre(self, stored_tasks: int):
        """Earlier-task buffer for ``stored_tasks`` tasks (capacity 1 when 0: never filled,
        so that every method runs the same compiled update)."""
        return replay.init_buffer(max(self.config.replay_store_size * stored_tasks, 1),
                                  OBS_DIM, ACTION_DIM)

    @staticmethod
    def add(buffer, rows: dict):
        """Writes one seed's staged chunk (``rows`` from :meth:`stage_step`, ``[K * E, ...]``)."""
        batch = replay.Transition(rows["obs"], rows["action"], rows["reward"],
                                  rows["next_obs"], rows["terminated"])
        return replay.add(buffer, batch, rows["valid"])

    @staticmethod
    def sampler(agent, buffer):
        return sac.buffer_sampler(agent, buffer)

    @staticmethod
    def nonempty(buffer):
        return buffer.size > 0

    def store(self, pre, buffer, key, slot):
        """Appends ``replay_store_size`` uniform draws from ``buffer`` to ``pre`` (``slot``
        unused: one buffer for all earlier tasks)."""
        return nbsp.store_for_replay(pre, buffer, key, self.config.replay_store_size)

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
        x = np.swapaxes(x, 0, 1)
        return x.reshape(x.shape[0], -1, *x.shape[3:])

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


class Atari(MetaWorld):
    """Discrete SAC (CleanRL ``sac_atari.py``) on EnvPool Atari with frame-once replay."""

    name = "atari"
    metric = "ar"
    sr_name = "normalized_return"
    goal = "return"
    obs_shape, obs_dtype = (atari_replay.STACK, *atari_replay.FRAME_SHAPE), np.uint8
    action_shape, action_dtype = (), np.int32
    # No drift probes: 1000 frame stacks per task would cost 28 MB per seed and task.
    probe_action = None
    # Conv feature maps of T = 1e4 frames would need gigabytes; record 256 frames at a time.
    record_chunk = 256
    # EnvPool's reset step after a game over is a real step of the pool; Atari games differ in
    # length across envs, so every pool step counts towards the budget.
    counts_invalid_steps = True

    def make_agent(self, actor_opt, q_opt) -> sac_discrete.SACDiscrete:
        from nbsp_jax.envs_atari import NUM_ACTIONS, OBS_SHAPE

        c = self.config
        return sac_discrete.make_sac_discrete(
            OBS_SHAPE, NUM_ACTIONS, hidden=c.hidden, policy_lr=c.policy_lr, q_lr=c.q_lr,
            gamma=c.gamma, batch_size=c.batch_size, actor_opt=actor_opt, q_opt=q_opt,
            target_every=self.target_every(), conv_impl=c.conv_impl,
        )

    def adam(self, lr: float):
        import optax

        return optax.adam(lr, eps=1e-4)  # CleanRL sac_atari's eps

    def target_every(self) -> int:
        """Gradient steps between hard target copies (8000 env steps / 4 = 2000)."""
        c = self.config
        return max(c.target_update_every // (c.update_every // c.updates_per_step), 1)

    agent_module = sac_discrete

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
        return jax.vmap(lambda _: atari_replay.init(cap))(jnp.arange(self.config.num_envs))

    def init_pre(self, stored_tasks: int):
        """One window per (earlier task, env): ``stored_tasks * E`` streams (one tiny stream
        when 0)."""
        n = max(stored_tasks, 1) * self.config.num_envs
        cap = self._stream_capacity(self.config.replay_store_size) if stored_tasks else 1
        return jax.vmap(lambda _: atari_replay.init(cap))(jnp.arange(n))

    @staticmethod
    def add(buffer, rows: dict):
        """Writes one seed's staged chunk in time order (``rows`` fields ``[K, E, ...]``)."""

        def one_step(buf, r):
            add = jax.vmap(atari_replay.add, in_axes=(0, 0, 0, 0, 0, 0, None))
            return add(buf, r["frame"][:, None], r["action"], r["reward"], r["terminated"],
                       r["valid"], r["keep"]), None

        return jax.lax.scan(one_step, buffer, rows)[0]

    @staticmethod
    def sampler(agent, buffer):
        return lambda key, step: atari_replay.sample_streams(buffer, key, agent.batch_size)

    @staticmethod
    def nonempty(buffer):
        return atari_replay.num_transitions_streams(buffer) > 0

    def store(self, pre, buffer, key, slot):
        """Copies a window of ``replay_store_size / E`` consecutive frames of each env's
        stream (uniform offset) into the streams of earlier task ``slot``."""
        e = self.config.num_envs
        length = self._stream_capacity(self.config.replay_store_size)
        keys = jax.random.split(key, e)
        wins = jax.vmap(lambda b, k: atari_replay.window(b, k, length))(buffer, keys)
        return jax.tree.map(
            lambda p, w: jax.lax.dynamic_update_slice_in_dim(p, w.astype(p.dtype), slot * e, 0),
            pre, wins)

    def make_env(self, task: str, num_envs: int, seed: int, train: bool = True):
        from nbsp_jax.envs_atari import AtariSeedVecEnv

        c = self.config
        # Training: CleanRL's episodic life and reward clipping; evaluation: whole games.
        return AtariSeedVecEnv(task, c.num_seeds, num_envs, seed, episodic_life=train,
                               reward_clip=train, max_episode_steps=c.max_episode_steps)

    def random_actions(self, rng: np.random.Generator) -> np.ndarray:
        from nbsp_jax.envs_atari import NUM_ACTIONS

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
        return metrics.normalize_atari(task, per_env.mean(axis=1))

    def updates_per_chunk(self) -> int:
        c = self.config
        return c.chunk_steps * c.num_envs * c.updates_per_step // c.update_every

    def progress_text(self, recent, returns) -> str:
        return " ".join(f"{np.mean(r):.1f}" if r else "nan" for r in returns)

