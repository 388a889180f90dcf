import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax.networks import GaussianActor, QNetwork, record


def test_capture_is_post_relu_and_keyed_like_params():
    actor = GaussianActor(action_dim=4, hidden=(16, 8))
    params = actor.init(jax.random.key(0), jnp.zeros((1, 39)))
    obs = jax.random.normal(jax.random.key(1), (32, 39))
    (mean, _), acts = record(actor, params, obs)
    assert set(acts) == {"fc0", "fc1"}  # output layers are not candidates
    assert set(acts) <= set(params["params"])
    assert acts["fc0"].shape == (32, 16) and acts["fc1"].shape == (32, 8)
    # Recompute by hand: post-ReLU values of the first layer.
    p = params["params"]["fc0"]
    expected = np.maximum(obs @ p["kernel"] + p["bias"], 0.0)
    np.testing.assert_allclose(acts["fc0"], expected, rtol=1e-5, atol=1e-6)
    assert float(acts["fc0"].min()) == 0.0  # some units are cut by ReLU
    # Recording does not change the output.
    np.testing.assert_allclose(mean, actor.apply(params, obs)[0], rtol=1e-6)


def test_critic_capture():
    q = QNetwork(hidden=(8, 8, 8))
    params = q.init(jax.random.key(0), jnp.zeros((1, 39)), jnp.zeros((1, 4)))
    out, acts = record(q, params, jnp.ones((5, 39)), jnp.ones((5, 4)))
    assert out.shape == (5,)
    assert sorted(acts) == ["fc0", "fc1", "fc2"]
    assert all(float(a.min()) >= 0.0 for a in acts.values())
