import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax.buffers import frames as ar

STEPS = 300  # per env, fed in two chunks of CHUNK
CHUNK = 150
EPISODE = 100  # max_episode_steps: forces a truncation every 100 steps
NUM_ENVS = 2  # two streams, fed through jit(vmap(add))


@pytest.fixture(scope="module")
def pong():
    """Random-action EnvPool Pong, 2 envs, with what it returned each step (host side)."""
    envpool = pytest.importorskip("envpool")
    env = envpool.make("Pong-v5", env_type="gymnasium", num_envs=NUM_ENVS, seed=3,
                       full_action_space=True, max_episode_steps=EPISODE)
    obs0, _ = env.reset()
    rng = np.random.default_rng(0)
    rec = {k: [] for k in ("obs", "action", "reward", "terminated", "valid", "elapsed")}
    done = np.zeros(NUM_ENVS, bool)
    for _ in range(STEPS):
        action = rng.integers(0, 18, NUM_ENVS).astype(np.int32)
        obs, reward, term, trunc, info = env.step(action)
        for k, v in (("obs", obs), ("action", action), ("reward", reward),
                     ("terminated", term), ("valid", ~done), ("elapsed", info["elapsed_step"])):
            rec[k].append(np.asarray(v))
        done = term | trunc
    env.close()
    rec = {k: np.stack(v) for k, v in rec.items()}  # [STEPS, NUM_ENVS, ...]
    rec["terminated"] = rec["terminated"].astype(np.float32)
    rec["obs0"] = obs0
    return rec


def _feed_fn():
    def feed(buf, obs, action, reward, terminated, valid, keep):
        step = lambda b, x: (jax.vmap(ar.add)(b, *x), None)
        return jax.lax.scan(step, buf, (obs, action, reward, terminated, valid, keep))[0]

    return jax.jit(feed)


_feed = _feed_fn()
_add = jax.jit(ar.add)
_add_first = jax.jit(ar.add_first)


@jax.jit
def _rebuild(buf):
    """(transition mask, every ring row rebuilt) of one stream, in one compiled call."""
    return ar.transition_mask(buf), ar.gather(buf, jnp.arange(buf.frames.shape[0]))


def _init(capacity, frame_shape=ar.FRAME_SHAPE, streams=None):
    make = lambda: ar.init(capacity, frame_shape)
    if streams is not None:
        make = lambda: jax.vmap(lambda _: ar.init(capacity, frame_shape))(jnp.arange(streams))
    return jax.jit(make)()


def _fill(pong, capacity, keep=None):
    """Yields (steps fed, buffers [NUM_ENVS, ...]) after each chunk."""
    keep = np.ones((STEPS, NUM_ENVS), bool) if keep is None else keep
    buf = jax.jit(jax.vmap(ar.add_first))(_init(capacity, streams=NUM_ENVS), pong["obs0"])
    for t0 in range(0, STEPS, CHUNK):
        sl = slice(t0, t0 + CHUNK)
        buf = _feed(buf, *(jnp.asarray(pong[k][sl]) for k in
                           ("obs", "action", "reward", "terminated", "valid")),
                    jnp.asarray(keep[sl]))
        yield t0 + CHUNK, buf


def _stream(buf, e):
    return jax.tree.map(lambda x: np.asarray(x[e]), jax.device_get(buf))


def _host_expected(pong, e, steps, rows):
    """Independent model of stream e after `steps` steps in a ring of `rows` frames.

    Global row r holds the newest frame of stacks[r] (stacks[0] = reset obs, stacks[t+1] = obs
    returned by step t); step r is the transition from row r to row r+1 when valid[r]. Returns
    {global row: (obs, action, reward, next_obs, terminated)} for the transitions whose
    frames are all still in the ring, plus the stacks.
    """
    stacks = np.concatenate([pong["obs0"][None, e], pong["obs"][:steps, e]])
    first = np.concatenate([[True], ~pong["valid"][:steps, e]])
    written = steps + 1
    oldest = max(0, written - rows)
    out = {}
    for r in range(written - 1):
        if not pong["valid"][r, e]:
            continue  # row r is an episode's final obs; row r+1 starts the next episode
        ep_start = max(i for i in range(r + 1) if first[i])
        if max(ep_start, r - (ar.STACK - 1)) >= oldest:
            out[r] = (stacks[r], pong["action"][r, e], pong["reward"][r, e], stacks[r + 1],
                      pong["terminated"][r, e])
    return out


def _check_against_envpool(pong, buf, steps):
    for e in range(NUM_ENVS):
        b = _stream(buf, e)
        rows = b.frames.shape[0]
        expected = _host_expected(pong, e, steps, rows)
        mask, every = jax.device_get(_rebuild(b))
        phys = np.flatnonzero(mask)
        size, ptr = int(b.size), int(b.ptr)
        assert size == min(steps + 1, rows)
        glob = steps + 1 - size + (phys - (ptr - size)) % rows
        assert sorted(glob.tolist()) == sorted(expected)  # exactly the complete transitions
        got = type(every)(*(x[phys] for x in every))
        for i, r in enumerate(glob):
            obs, action, reward, next_obs, term = expected[r]
            np.testing.assert_array_equal(got.obs[i], obs)
            np.testing.assert_array_equal(got.next_obs[i], next_obs)
            assert (got.action[i], got.reward[i], got.terminated[i]) == (action, reward, term)
        yield e, expected


def test_envpool_facts(pong):
    # The reset step is the one after an episode ends, and reports elapsed_step == 0.
    np.testing.assert_array_equal(pong["elapsed"] == 0, ~pong["valid"])
    assert (~pong["valid"]).sum(0).tolist() == [2, 2]  # truncations at steps 100 and 200
    resets = pong["obs"][~pong["valid"]]
    assert (resets == resets[:, :1]).all()  # a reset stack repeats its first frame
    v = pong["valid"][1:]  # within an episode each step shifts the stack by one frame
    np.testing.assert_array_equal(pong["obs"][1:, :, :3][v], pong["obs"][:-1, :, 1:][v])
    assert (pong["reward"] != 0).any()  # rewards to place on the right rows


def test_reconstructs_every_envpool_transition(pong):
    for steps, buf in _fill(pong, capacity=400):  # no wrap-around
        for _, expected in _check_against_envpool(pong, buf, steps):
            # every valid step of the stream is stored and rebuilt exactly
            assert len(expected) == pong["valid"][:steps].sum(0)[0]
            if steps == STEPS:
                assert len(expected) == STEPS - 2


def test_ring_wraparound_reconstructs_and_drops_overwritten(pong):
    capacity = 60
    for steps, buf in _fill(pong, capacity):
        assert int(buf.size[0]) == capacity + ar.STACK  # full and wrapped
        for e, expected in _check_against_envpool(pong, buf, steps):
            oldest = steps + 1 - (capacity + ar.STACK)
            ends = sum(not pong["valid"][r, e] for r in range(oldest, steps))
            if steps == CHUNK:
                assert ends == 1  # the window spans the truncation at step 100
            # a full ring samples the last `capacity` frames, less one per episode end
            assert len(expected) >= capacity - ends
            assert min(expected) >= oldest


def test_sample_only_complete_transitions(pong):
    capacity = 60
    steps, buf = next(_fill(pong, capacity))  # the window spans an episode boundary
    keys = jax.random.split(jax.random.key(1), NUM_ENVS)
    sample = jax.jit(jax.vmap(ar.sample, in_axes=(0, 0, None)), static_argnums=2)
    batch = jax.device_get(sample(buf, keys, 1024))
    assert batch.obs.shape == (NUM_ENVS, 1024, 4, 84, 84) and batch.obs.dtype == np.uint8
    for e in range(NUM_ENVS):
        allowed = {}
        for obs, a, r, nxt, d in _host_expected(pong, e, steps, capacity + ar.STACK).values():
            allowed.setdefault((obs.tobytes(), nxt.tobytes()), set()).add((a, r, d))
        hits = set()
        for i in range(1024):
            key = (batch.obs[e, i].tobytes(), batch.next_obs[e, i].tobytes())
            assert key in allowed  # no crossing, no overwritten frame, no other stream
            assert (batch.action[e, i], batch.reward[e, i], batch.terminated[e, i]) in allowed[key]
            hits.add(key)
        assert len(hits) > 0.9 * len(allowed)


def test_keep_false_writes_nothing(pong):
    keep = np.ones((STEPS, NUM_ENVS), bool)
    keep[CHUNK:, 1] = False  # stream 1 gated off for the second chunk
    (_, half), (_, full) = _fill(pong, 400, keep)
    jax.tree.map(np.testing.assert_array_equal, _stream(full, 1), _stream(half, 1))
    assert int(full.size[0]) == STEPS + 1


def _tiny(frame_id):
    """A 4-frame reset-style stack whose newest frame is filled with frame_id (2x2 frames)."""
    return jnp.full((4, 2, 2), frame_id, jnp.uint8)


def test_termination_truncation_and_reset_padding():
    buf = _init(16, (2, 2))
    buf = _add_first(buf, _tiny(10))
    buf = _add(buf, _tiny(11), 1, 0.5, 0.0, True)
    buf = _add(buf, _tiny(12), 2, 1.5, 1.0, True)  # terminated: 12 is the final obs
    buf = _add(buf, _tiny(20), 7, 9.0, 1.0, False)  # reset step: fields ignored
    buf = _add(buf, _tiny(21), 3, -1.0, 0.0, True)
    buf = _add(buf, _tiny(22), 4, 2.0, 0.0, True)  # truncated: 0.0, bootstraps
    buf = _add(buf, _tiny(30), 0, 0.0, 0.0, False)
    mask, every = jax.device_get(_rebuild(buf))
    np.testing.assert_array_equal(mask[:7], [1, 1, 0, 1, 1, 0, 0])
    assert mask.sum() == 4 == int(jax.jit(ar.num_transitions)(buf))
    b = jax.tree.map(lambda x: x[[0, 1, 3, 4]], every)
    ids = lambda x: x[:, :, 0, 0].tolist()
    assert ids(b.obs) == [[10] * 4, [10, 10, 10, 11], [20] * 4, [20, 20, 20, 21]]
    assert ids(b.next_obs) == [[10, 10, 10, 11], [10, 10, 11, 12], [20, 20, 20, 21],
                               [20, 20, 21, 22]]
    assert b.action.tolist() == [1, 2, 3, 4]
    assert b.reward.tolist() == [0.5, 1.5, -1.0, 2.0]
    assert b.terminated.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_small_ring_never_reads_overwritten_frames():
    buf = _init(2, (2, 2))  # 6 rows
    buf = _add_first(buf, _tiny(0))
    for i in range(1, 8):
        buf = _add(buf, _tiny(i), i, float(i), 0.0, True)
    # Rows hold frames 2..7; frame 7 has no successor and frames 2..4 need overwritten
    # history (frames 0 and 1), so only 5 and 6 can be sampled.
    mask, every = jax.device_get(_rebuild(buf))
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort((rows - int(buf.ptr)) % 6)]  # oldest first
    b = jax.tree.map(lambda x: x[rows], every)
    assert b.obs[:, :, 0, 0].tolist() == [[2, 3, 4, 5], [3, 4, 5, 6]]
    assert b.action.tolist() == [6, 7]


def test_sample_is_uniform_over_complete_transitions():
    buf = _init(32, (1, 1))
    buf = _add_first(buf, _tiny(0)[:, :1, :1])
    for i in range(1, 40):
        valid = i % 9 != 0  # an episode boundary every 9 steps
        buf = _add(buf, _tiny(i)[:, :1, :1], i, 0.0, 0.0, valid)
    mask, _ = jax.device_get(_rebuild(buf))
    rows = np.asarray(jax.jit(ar.sample_rows, static_argnums=2)(buf, jax.random.key(0), 40_000))
    assert mask[rows].all()
    counts = np.bincount(rows, minlength=mask.size)[mask]
    expected = 40_000 / mask.sum()
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_bytes_per_transition():
    assert ar.bytes_per_transition() == 84 * 84 + 13 == 7069
    assert ar.naive_bytes_per_transition() == 2 * 4 * 84 * 84 + 12 == 56460
    buf = _init(1000)
    assert sum(x.nbytes for x in buf) == ar.buffer_bytes(1000) == 1004 * 7069 + 8
    shapes = jax.eval_shape(lambda: ar.init(200_000))  # the paper's Atari buffer, not allocated
    total = sum(np.prod(x.shape) * x.dtype.itemsize for x in shapes)
    assert total == ar.buffer_bytes(200_000) < 1.42e9
    assert 200_000 * ar.naive_bytes_per_transition() / total > 7.9


def _as_set(batch):
    """Transitions of a batch as hashable (obs bytes, action, reward, next_obs bytes)."""
    b = jax.device_get(batch)
    return {(b.obs[i].tobytes(), int(b.action[i]), float(b.reward[i]), b.next_obs[i].tobytes())
            for i in range(b.action.shape[0])}


def test_window_keeps_exact_consecutive_transitions(pong):
    *_, (steps, buf) = _fill(pong, 400)  # all 301 rows written, nothing overwritten
    b = _stream(buf, 0)
    expected = _host_expected(pong, 0, steps, 404)
    window = jax.jit(ar.window, static_argnums=2)
    for seed in range(3):
        w = jax.device_get(window(jax.tree.map(jnp.asarray, b), jax.random.key(seed), 120))
        assert w.frames.shape[0] == 124 and int(w.size) == 124
        mask, every = jax.device_get(_rebuild(w))
        rows = np.flatnonzero(mask)
        # Consecutive rows: the window's oldest 3 rows only give stack history, its newest
        # has no successor, and an episode's final obs has no transition.
        assert 120 - 2 <= rows.size <= 120
        got = _as_set(type(every)(*(x[rows] for x in every)))
        want = {(o.tobytes(), int(a), float(r), n.tobytes()) for o, a, r, n, _ in
                expected.values()}
        assert got <= want  # every kept transition is one EnvPool really returned


def test_window_of_short_buffer_copies_everything():
    buf = ar.add_first(ar.init(50, (2, 2)), jnp.zeros((4, 2, 2), jnp.uint8))
    for t in range(1, 6):
        buf = ar.add(buf, jnp.full((4, 2, 2), t, jnp.uint8), t, float(t), 0.0, True)
    w = ar.window(buf, jax.random.key(0), 20)
    assert int(w.size) == 6 and int(ar.num_transitions(w)) == 5
    np.testing.assert_array_equal(np.asarray(w.frames[:6, 0, 0]), np.arange(6))
    np.testing.assert_array_equal(np.asarray(w.reward[:5]), np.arange(1, 6))


def test_sample_streams_uniform_over_all_streams():
    # Stream 0: 30 transitions (reward 0); stream 1: 10 transitions (reward 1); stream 2 empty.
    def stream(n, value):
        buf = ar.add_first(ar.init(40, (2, 2)), jnp.zeros((4, 2, 2), jnp.uint8))
        for t in range(n):
            buf = ar.add(buf, jnp.full((4, 2, 2), t + 1, jnp.uint8), t % 18, value, 0.0, True)
        return buf

    bufs = jax.tree.map(lambda *x: jnp.stack(x), stream(30, 0.0), stream(10, 1.0),
                        ar.init(40, (2, 2)))
    assert int(ar.num_transitions_streams(bufs)) == 40
    batch = jax.jit(ar.sample_streams, static_argnums=2)(bufs, jax.random.key(0), 20_000)
    share = float(np.mean(np.asarray(batch.reward)))
    assert abs(share - 0.25) < 0.015  # 10 of the 40 complete transitions
    # Every sampled stack is consistent: next_obs is obs shifted by one frame.
    np.testing.assert_array_equal(np.asarray(batch.next_obs[:, :3]), np.asarray(batch.obs[:, 1:]))
    np.testing.assert_array_equal(np.asarray(batch.next_obs[:, 3, 0, 0]),
                                  np.asarray(batch.obs[:, 3, 0, 0]) + 1)
