"""The Meta-World / Atari domain adapters that let one training loop serve both."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax.buffers import frames as ar
from nbsp_jax.config import atari_cycle, validate
from nbsp_jax.domains import Atari, MetaWorld, get_domain
from nbsp_jax.types import Step


def _atari(**overrides):
    c = atari_cycle(("Pong", "Bowling"), 10_000, "smoke")
    c.update(overrides)
    return c


def test_atari_schedule_matches_cleanrl():
    d = get_domain(atari_cycle(("Pong", "Bowling"), 1_500_000))
    assert isinstance(d, Atari)
    assert d.updates_per_chunk() == 64 // 4  # one update every 4 env steps
    assert d.target_every() == 2000  # hard copy every 8000 env steps
    assert isinstance(get_domain(_atari(agent="sac")), MetaWorld)


def test_atari_goal_is_raw_return_of_whole_games():
    d = Atari(_atari())
    z = np.zeros((2, 1), bool)
    step = Step(obs=None, reward=np.array([[1.0], [-1.0]], np.float32),
                terminated=np.array([[True], [False]]), truncated=z, success=z,
                valid=np.ones((2, 1), bool))
    # A life loss (terminated, game not over) with a raw score of 25 clipped to 1.
    env = types.SimpleNamespace(raw_reward=np.array([[25.0], [-3.0]], np.float32),
                                game_over=np.array([[False], [True]]))
    goal = d.goal_step(env, step)
    np.testing.assert_array_equal(goal.reward, [[25.0], [-3.0]])
    np.testing.assert_array_equal(goal.terminated, [[False], [True]])
    assert not goal.truncated.any()


def _obs(t, s, e):
    """A fake [S, E, 4, 84, 84] observation whose newest frame is t + 10 s + e."""
    x = np.zeros((s, e, 4, 84, 84), np.uint8)
    for i in range(s):
        for j in range(e):
            x[i, j, -1] = t + 10 * i + j
    return x


def test_atari_add_writes_each_env_stream_in_time_order():
    c = _atari(num_envs=2, num_seeds=2, chunk_steps=4, buffer_size=40)
    d = Atari(c)
    add = jax.jit(jax.vmap(d.add))
    buf = jax.vmap(lambda _: d.init_buffer())(jnp.arange(2))
    start = d.start_episode_rows(_obs(0, 2, 2))
    buf = add(buf, {k: jnp.asarray(d.to_seed_rows(v)) for k, v in start.items()})
    stage = d.new_stage()
    active = np.array([True, False])  # seed 1 gated off: writes nothing
    for k in range(4):
        valid = np.ones((2, 2), bool)
        valid[:, 1] = k != 2  # env 1 resets at step 2
        z = np.zeros((2, 2), bool)
        step = Step(_obs(k + 1, 2, 2), np.full((2, 2), k, np.float32), z, z, z, valid)
        d.stage_step(stage, k, None, np.full((2, 2), k + 5, np.int32), step, active)
    buf = add(buf, {k: jnp.asarray(d.to_seed_rows(v)) for k, v in stage.items()})
    b = jax.device_get(buf)
    # Seed 0, env 0: frames 0..4, actions 5..8 on rows 0..3, no episode start after row 0.
    np.testing.assert_array_equal(b.frames[0, 0, :5, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b.action[0, 0, :4], [5, 6, 7, 8])
    np.testing.assert_array_equal(b.first[0, 0, :5], [True, False, False, False, False])
    # Seed 0, env 1: the reset step's frame starts an episode, its action is not recorded.
    np.testing.assert_array_equal(b.first[0, 1, :5], [True, False, False, True, False])
    np.testing.assert_array_equal(b.action[0, 1, :4], [5, 6, 0, 8])
    assert int(b.size[0, 0]) == 5 and int(b.size[1, 0]) == 1  # seed 1 kept only its reset


def test_atari_store_fills_one_slot_per_task():
    c = _atari(num_envs=2, num_seeds=1, replay_store_size=20, buffer_size=60)
    d = Atari(c)
    buf = d.init_buffer()
    first = jax.vmap(ar.add_first)
    buf = first(buf, jnp.zeros((2, 4, 84, 84), jnp.uint8))
    step = jax.jit(jax.vmap(ar.add))
    for t in range(1, 31):
        buf = step(buf, jnp.full((2, 4, 84, 84), t, jnp.uint8), jnp.full(2, t % 18),
                   jnp.full(2, float(t)), jnp.zeros(2), jnp.ones(2, bool), jnp.ones(2, bool))
    pre = d.init_pre(3)  # 3 earlier tasks x 2 envs = 6 streams of 10 (+4) rows
    assert pre.frames.shape[:2] == (6, 14)
    store = jax.jit(d.store, static_argnums=3)
    pre = store(pre, buf, jax.random.key(0), 1)
    sizes = np.asarray(pre.size)
    np.testing.assert_array_equal(sizes, [0, 0, 14, 14, 0, 0])  # slot 1 = streams 2, 3
    # Each window is 14 consecutive frames of its stream.
    for s in (2, 3):
        f = np.asarray(pre.frames[s, :, 0, 0]).astype(int)
        assert (np.diff(f) == 1).all()
    assert int(ar.num_transitions_streams(pre)) == 2 * (14 - 3 - 1)


@pytest.mark.parametrize("field, value, needle", [
    ("tasks", ("Pong", "Pnog"), "Available games"),
    ("update_every", 3, "multiple of config.update_every=3"),
    ("conv_impl", "fft", "valid choices"),
    ("alpha_logp", "fresh", r"alpha_logp='fresh'.*valid choices: \('reuse',\)"),
])
def test_atari_bad_input(field, value, needle):
    c = _atari()
    c[field] = value
    with pytest.raises(ValueError, match=needle):
        validate(c)
