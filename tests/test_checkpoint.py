"""Checkpointer round trips: device arrays, typed PRNG keys and the host dict."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax.workdir.checkpoint import Checkpointer


@pytest.mark.parametrize("process_local", [False, True])
def test_save_restore_round_trip(tmp_path, process_local):
    keys = jax.random.split(jax.random.key(3), 2)
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "keys": keys, "n": jnp.int32(7)}
    host = {"phase": 1, "rows": [[0.5, None]]}
    ckpt = Checkpointer(str(tmp_path), process_local=process_local)
    ckpt.save(1, tree, host)
    ckpt.save(2, jax.tree.map(lambda x: x, {**tree, "w": tree["w"] + 1}), {**host, "phase": 2})
    ckpt.close()

    again = Checkpointer(str(tmp_path), process_local=process_local)
    assert again.latest_step() == 2
    template = {"w": jnp.zeros((2, 3)), "keys": jax.random.split(jax.random.key(0), 2),
                "n": jnp.int32(0)}
    device, got_host = again.restore(2, template)
    again.close()
    assert got_host == {**host, "phase": 2}
    np.testing.assert_array_equal(device["w"], np.arange(6.0).reshape(2, 3) + 1)
    assert isinstance(device["w"], jax.Array) and int(device["n"]) == 7
    # Keys come back as typed keys that draw the same numbers.
    np.testing.assert_array_equal(jax.random.uniform(device["keys"][1], (3,)),
                                  jax.random.uniform(keys[1], (3,)))
