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


def test_run_checkpoint_format_is_checked(tmp_path):
    """A checkpoint from before the format number restores as format 1; another format is
    refused with a message that names it and the format this version reads."""
    import dataclasses

    from nbsp_jax import training
    from tests.conftest import tiny_config

    c = tiny_config()
    device, host = training.init_run(c, training.make_learner(c), 1)
    tree = {k: v for k, v in device._asdict().items() if v is not None}
    old = dataclasses.asdict(host)
    del old["format"], old["forked_from"]  # the host JSON as written before the change
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, tree, old)
    _, restored = training.restore(ckpt, 1, device)
    assert restored.format == training.FORMAT == 1 and restored.forked_from is None
    assert restored.rng == host.rng
    ckpt.save(2, tree, {**old, "format": 7})
    with pytest.raises(ValueError, match="checkpoint 2 in .* has format 7; this version of "
                                         "nbsp_jax reads format 1"):
        training.restore(ckpt, 2, device)
    ckpt.close()


def test_restore_keeps_the_templates_placement(tmp_path):
    """Uncommitted template leaves (a run without a mesh) come back uncommitted, committed ones
    with the template's device: restored arrays then share the run's jit signatures."""
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(1)}
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, tree, {})
    loose = {"w": jnp.zeros((2, 3)), "key": jax.random.key(0)}
    pinned = jax.device_put(loose, jax.devices()[0])
    assert not loose["w"].committed and pinned["w"].committed
    got_loose, _ = ckpt.restore(1, loose)
    got_pinned, _ = ckpt.restore(1, pinned)
    ckpt.close()
    assert not got_loose["w"].committed and not got_loose["key"].committed
    assert got_pinned["w"].committed and got_pinned["key"].committed
    for got in (got_loose, got_pinned):
        np.testing.assert_array_equal(got["w"], np.arange(6.0).reshape(2, 3))
        np.testing.assert_array_equal(jax.random.key_data(got["key"]),
                                      jax.random.key_data(tree["key"]))
