"""Tests for nbsp_jax.envs: the EnvPool and metaworld backends of SeedVecEnv (SPEC section 7).

Each (task, backend) pair is rolled out once per session (see ``rollout``) with 2 envs: a scripted
expert episode of 500 steps from ``metaworld.policies``, the reset step, a uniform-random episode
of 500 steps, and the next reset step. The tests then hold both backends to the same observation
layout, reward scale, success signal and autoreset bookkeeping.
"""

import functools

import numpy as np
import pytest

from nbsp_jax.envs import (
    BACKENDS,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    SeedVecEnv,
    check_task,
    metaworld_tasks,
)
from nbsp_jax.envs.metaworld import reference_env

T = MAX_EPISODE_STEPS
# Every rollout holds 2 envs; the envpool one as 2 seeds x 1 env, the metaworld one as
# 1 seed x 2 envs, so that both [S, E] splits and the seed labels of EpisodeStats get exercised.
SHAPES = {"envpool": (2, 1), "metaworld": (1, 2)}
TASKS = ("window-open", "button-press-topdown")
# Sawyer hand start (hand_init_pos (0, 0.4, 0.2) after the reset settles), gripper open.
HAND_START = np.array([0.0045, 0.4003, 0.1957])
# Goal bounds from the Meta-World v3 sources: window-open's goal is the window position
# (x in [-0.1, 0.1], y in [0.7, 0.9], z 0.16) shifted by +0.2 in x; button-press-topdown's goal
# is the hole site on the button box (x in [-0.1, 0.1], y in [0.8, 0.9], z 0.115) at z 0.215.
GOAL_BOUNDS = {
    "window-open": (np.array([0.1, 0.7, 0.16]), np.array([0.3, 0.9, 0.16])),
    "button-press-topdown": (np.array([-0.1, 0.8, 0.215]), np.array([0.1, 0.9, 0.215])),
}
GOAL_TOL = 2e-3

# gymnasium's env checker warns about Meta-World's observation space (zero-width goal bounds).
pytestmark = pytest.mark.filterwarnings("ignore:.*WARN.*:UserWarning")


def _expert(task):
    from metaworld import policies

    name = "Sawyer" + "".join(w.capitalize() for w in task.split("-")) + "V3Policy"
    return getattr(policies, name)()


class Rollout:
    """Everything one rollout saw: ``reset_obs [S, E, 39]``, per step ``obs [N, S, E, 39]``,
    ``reward``/``terminated``/``truncated``/``success``/``valid`` ``[N, S, E]`` and ``stats``
    (the EpisodeStats of each step). Steps 0..499 expert, 500 reset, 501..1000 random, 1001
    reset."""

    def __init__(self, reset_obs, steps, stats):
        self.reset_obs = reset_obs
        for field in steps[0]._fields:
            setattr(self, field, np.stack([getattr(s, field) for s in steps]))
        self.stats = stats

    def all_obs(self):
        """``[N + 1, S, E, 39]``: the reset observation, then every step's."""
        return np.concatenate([self.reset_obs[None], self.obs])


@functools.cache
def rollout(task, backend):
    import warnings

    num_seeds, num_envs = SHAPES[backend]
    policy = _expert(task)
    rng = np.random.default_rng(123)
    env = SeedVecEnv(task, num_seeds=num_seeds, num_envs=num_envs, seed=0, backend=backend)
    try:
        obs = env.reset()
        reset_obs, steps, stats = obs, [], []
        for i in range(2 * T + 2):
            if i <= T:
                with warnings.catch_warnings():  # "Constant(s) may be too high" from the policy
                    warnings.simplefilter("ignore")
                    flat = [policy.get_action(o.astype(np.float64)) for o in obs.reshape(-1, 39)]
                action = np.stack(flat).reshape(num_seeds, num_envs, 4)
            else:
                action = rng.uniform(-1.0, 1.0, (num_seeds, num_envs, 4))
            step, st = env.step(action)
            steps.append(step)
            stats.append(st)
            obs = step.obs
    finally:
        env.close()
    return Rollout(reset_obs, steps, stats)


EXPERT = slice(0, T)  # the expert episode's steps
RANDOM = slice(T + 1, 2 * T + 1)  # the random episode's steps
RESETS = (T, 2 * T + 1)  # the reset steps after each episode

CASES = [(task, backend) for task in TASKS for backend in BACKENDS]


# ---------------------------------------------------------------------------------- layout


@pytest.mark.slow
@pytest.mark.parametrize("task,backend", CASES)
def test_observation_shape_and_layout(task, backend):
    r = rollout(task, backend)
    shape = SHAPES[backend]
    assert r.reset_obs.shape == (*shape, OBS_DIM) and r.reset_obs.dtype == np.float32
    assert r.obs.shape == (2 * T + 2, *shape, OBS_DIM) and r.obs.dtype == np.float32
    for field in ("reward", "terminated", "truncated", "success", "valid"):
        assert getattr(r, field).shape == (2 * T + 2, *shape), field
    assert np.all(np.isfinite(r.obs))

    # Every episode starts with the hand at the same place, gripper open (obs[3] = 1).
    starts = np.concatenate([r.reset_obs[None], r.obs[list(RESETS)]])
    np.testing.assert_allclose(
        starts[..., 0:3], np.broadcast_to(HAND_START, starts[..., 0:3].shape), atol=1e-3
    )
    np.testing.assert_allclose(starts[..., 3], 1.0, atol=1e-3)
    # A first observation's previous frame is the frame itself.
    np.testing.assert_array_equal(starts[..., 18:36], starts[..., 0:18])

    # The 18:36 block is the previous frame's 0:18 on every real step.
    prev = r.all_obs()[:-1]
    valid = r.valid
    assert valid.sum() == 2 * T * 2
    np.testing.assert_allclose(r.obs[valid][:, 18:36], prev[valid][:, 0:18], atol=1e-6)
    # ...and not simply a copy of the current frame (the hand moves).
    assert np.abs(r.obs[EXPERT][..., 0:3] - r.obs[EXPERT][..., 18:21]).max() > 1e-3

    # The goal is observable, inside the task's bounds, and fixed within an episode.
    goals = r.all_obs()[..., 36:39]
    assert np.all(np.abs(goals).sum(-1) > 0.1)
    lo, hi = GOAL_BOUNDS[task]
    assert np.all(goals >= lo - GOAL_TOL) and np.all(goals <= hi + GOAL_TOL), (
        goals.min((0, 1, 2)),
        goals.max((0, 1, 2)),
    )
    first = {0: r.reset_obs, T + 1: r.obs[T]}
    for start, stop in ((0, T + 1), (T + 1, 2 * T + 2)):
        np.testing.assert_array_equal(
            goals[start:stop], np.broadcast_to(first[start][..., 36:39], goals[start:stop].shape)
        )
    # A new episode brings a new goal.
    assert np.all(np.abs(goals[T + 1] - goals[T]).sum(-1) > 1e-4)
    # Each of the two envs has its own goal.
    assert np.abs(goals[0].reshape(2, 3)[0] - goals[0].reshape(2, 3)[1]).sum() > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_backends_agree_on_hand_motion(task):
    """The same random actions from the same start move the hand identically on both backends
    (same action scale, same controller), at least until it may touch an object."""
    a, b = (rollout(task, backend) for backend in BACKENDS)
    # Both rollouts drew the same random actions for flat env 0 then env 1 (envpool [2, 1],
    # metaworld [1, 2]); 20 steps of them move the hand but cannot reach the window or button.
    hand_a = a.obs[T + 1 : T + 21].reshape(20, 2, -1)[..., 0:4]
    hand_b = b.obs[T + 1 : T + 21].reshape(20, 2, -1)[..., 0:4]
    assert np.abs(hand_a[..., 0:3] - HAND_START).max() > 5e-3  # the hand did move
    np.testing.assert_allclose(hand_a, hand_b, atol=1e-4)


# ------------------------------------------------------------------------- reward, success


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_reward_scale_and_success_parity(task):
    means = {}
    for backend in BACKENDS:
        r = rollout(task, backend)
        rewards = r.reward[r.valid]
        assert np.all(rewards >= 0.0) and np.all(rewards <= 10.0), backend
        expert_mean = r.reward[EXPERT].mean()
        random_mean = r.reward[RANDOM].mean()
        means[backend] = expert_mean
        # The expert earns far more than random flailing.
        assert random_mean < 0.5 * expert_mean, (backend, expert_mean, random_mean)

        # The expert succeeds in every env, and the episode statistics say so.
        assert np.all(r.success[EXPERT].any(0)), backend
        expert_stats = r.stats[T - 1]
        assert expert_stats.success.tolist() == [True, True], backend
        # Random actions never succeed here (deterministic: fixed env seeds and action rng).
        assert not r.success[RANDOM].any(), backend
        random_stats = r.stats[2 * T]
        assert random_stats.success.tolist() == [False, False], backend
        # Meta-World never terminates on its own; episodes only truncate.
        assert not r.terminated.any(), backend
    ratio = means["envpool"] / means["metaworld"]
    assert 0.5 < ratio < 2.0, means


# ------------------------------------------------------------------------------- autoreset


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_autoreset_bookkeeping(backend):
    r = rollout("window-open", backend)
    num_seeds, num_envs = SHAPES[backend]
    seeds = np.repeat(np.arange(num_seeds), num_envs)
    for end, episode in ((T - 1, EXPERT), (2 * T, RANDOM)):
        # The last step of the episode: valid, truncated, not terminated.
        assert r.valid[end].all() and r.truncated[end].all() and not r.terminated[end].any()
        assert not r.truncated[episode][:-1].any()
        stats = r.stats[end]
        np.testing.assert_array_equal(stats.seed, seeds)
        np.testing.assert_array_equal(stats.length, [T, T])
        # The return is the sum of this episode's step rewards only (not the reset step's).
        ret = r.reward[episode].reshape(T, -1).astype(np.float64).sum(0)
        np.testing.assert_allclose(stats.ret, ret, rtol=1e-5)
        # The following reset step is invalid and reports nothing.
        reset = end + 1
        assert not r.valid[reset].any()
        assert not (r.truncated[reset].any() or r.terminated[reset].any() or r.success[reset].any())
        assert len(r.stats[reset].seed) == 0
    # Only the episode ends report statistics.
    assert [i for i, s in enumerate(r.stats) if len(s.seed)] == [T - 1, 2 * T]
    # The step after a reset step is valid again and continues from the reset observation.
    assert r.valid[T + 1].all()
    np.testing.assert_allclose(r.obs[T + 1][..., 18:36], r.obs[T][..., 0:18], atol=1e-6)
    # A reset step's action is ignored: the hand is back at its start.
    np.testing.assert_allclose(
        r.obs[T][..., 0:3].reshape(-1, 3), np.tile(HAND_START, (2, 1)), atol=1e-3
    )


def test_reset_mid_episode_restarts_counters():
    """reset() in the middle of an episode restarts the episode bookkeeping; a 2 x 2 pool
    labels its finished episodes seed-major."""
    env = SeedVecEnv("window-open", num_seeds=2, num_envs=2, seed=7)
    action = np.zeros((2, 2, 4))
    try:
        env.reset()
        for _ in range(10):
            step, stats = env.step(action)
            assert step.valid.all() and len(stats.seed) == 0
        env.reset()
        total = np.zeros((2, 2))
        for i in range(T):
            step, stats = env.step(action)
            total += step.reward
            assert step.valid.all() and step.reward.shape == (2, 2)
            if i < T - 1:
                assert len(stats.seed) == 0 and not step.truncated.any()
        assert step.truncated.all()
        np.testing.assert_array_equal(stats.seed, [0, 0, 1, 1])
        np.testing.assert_array_equal(stats.length, [T] * 4)
        np.testing.assert_allclose(stats.ret, total.reshape(-1), rtol=1e-5)
        assert len(np.unique(stats.ret.round(3))) == 4  # distinct goals, distinct returns
    finally:
        env.close()


# ------------------------------------------------------------------------------------ seeds


def test_distinct_seeds_and_reproducible_resets():
    env = SeedVecEnv("window-open", num_seeds=3, num_envs=2, seed=0)
    obs = env.reset()
    env.close()
    assert obs.shape == (3, 2, OBS_DIM)
    goals = obs[..., 36:39].reshape(6, 3)
    assert len(np.unique(goals.round(6), axis=0)) == 6

    again = SeedVecEnv("window-open", num_seeds=3, num_envs=2, seed=0)
    np.testing.assert_array_equal(again.reset(), obs)
    again.close()

    # Env k of the pool gets environment seed seed + k.
    shifted = SeedVecEnv("window-open", num_seeds=1, num_envs=2, seed=1)
    np.testing.assert_array_equal(shifted.reset().reshape(2, -1), obs.reshape(6, -1)[1:3])
    shifted.close()


@pytest.mark.slow
def test_metaworld_backend_env_seeds():
    """The metaworld backend's env k is the reference env seeded ``seed + k``, deterministic."""
    r = rollout("window-open", "metaworld")
    for k in range(2):
        env = reference_env("window-open", k)
        obs, _ = env.reset()
        env.close()
        np.testing.assert_allclose(obs, r.reset_obs[0, k], atol=1e-6)


# -------------------------------------------------------------------------------- validation


def test_check_task():
    assert check_task("window-open") == "window-open"
    with pytest.raises(ValueError) as err:
        check_task("window-opne")
    assert "window-opne" in str(err.value) and "window-open" in str(err.value)
    assert "Did you mean" in str(err.value)


def test_task_list_matches_metaworld_package():
    """Every task EnvPool provides exists in the metaworld package too (the second backend)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    tasks = metaworld_tasks()
    assert len(tasks) == 50 and "window-open" in tasks and "button-press-topdown" in tasks
    assert sorted(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS) == tasks


def test_unknown_backend():
    with pytest.raises(ValueError) as err:
        SeedVecEnv("window-open", num_seeds=1, num_envs=1, seed=0, backend="mujoco")
    msg = str(err.value)
    assert "mujoco" in msg and all(b in msg for b in BACKENDS)


def test_unknown_task_in_constructor():
    with pytest.raises(ValueError, match="window-opne"):
        SeedVecEnv("window-opne", num_seeds=1, num_envs=1, seed=0)
