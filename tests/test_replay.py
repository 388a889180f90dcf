import jax.numpy as jnp
import numpy as np

from nbsp_jax.buffers import transitions as replay


def _batch(values):
    v = jnp.asarray(values, jnp.float32)
    n = v.shape[0]
    return replay.Transition(
        obs=jnp.tile(v[:, None], (1, 3)), action=jnp.tile(v[:, None], (1, 2)), reward=v,
        next_obs=jnp.tile(v[:, None] + 0.5, (1, 3)), terminated=jnp.zeros(n),
    )


def test_add_drops_invalid_rows_and_wraps():
    buf = replay.init_buffer(4, 3, 2)
    buf = replay.add(buf, _batch([1, 2, 3]), jnp.array([True, False, True]))
    np.testing.assert_array_equal(buf.data.reward, [1, 3, 0, 0])
    assert int(buf.ptr) == 2 and int(buf.size) == 2
    # Three more valid rows: 4 and 5 fill rows 2, 3; 6 wraps to row 0.
    buf = replay.add(buf, _batch([4, 5, 6]), jnp.array([True, True, True]))
    np.testing.assert_array_equal(buf.data.reward, [6, 3, 4, 5])
    np.testing.assert_array_equal(buf.data.next_obs[:, 0], [6.5, 3.5, 4.5, 5.5])
    assert int(buf.ptr) == 1 and int(buf.size) == 4


def test_sample_only_from_filled_rows():
    import jax

    buf = replay.init_buffer(100, 3, 2)
    buf = replay.add(buf, _batch([7, 8, 9]), jnp.ones(3, bool))
    batch = replay.sample(buf, jax.random.key(0), 512)
    assert set(np.unique(np.asarray(batch.reward)).tolist()) == {7.0, 8.0, 9.0}
    # obs and next_obs of a sampled row come from the same transition.
    np.testing.assert_allclose(batch.next_obs[:, 0], batch.obs[:, 0] + 0.5)


def test_bytes_per_transition_metaworld():
    # (39 obs + 39 next_obs + 4 action + reward + terminated) * 4 bytes
    assert replay.bytes_per_transition(39, 4) == 336
    buf = replay.init_buffer(1000, 39, 4)
    assert sum(x.nbytes for x in buf.data) == 1000 * 336
