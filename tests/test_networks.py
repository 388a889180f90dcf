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


def test_conv_capture_is_channel_mean_of_post_relu():
    import flax.linen as nn

    from nbsp_jax.networks import ReLUConv, ReLUDense

    class TinyCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ReLUConv(4, (3, 3), strides=2, name="conv0")(x)
            x = ReLUDense(5, name="fc0")(x.reshape(x.shape[0], -1))
            return nn.Dense(2, name="out")(x)

    model = TinyCNN()
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 2))
    params = model.init(jax.random.key(1), x)
    _, acts = record(model, params, x)
    assert acts["conv0"].shape == (3, 4) and acts["fc0"].shape == (3, 5)
    p = params["params"]["conv0"]
    conv = jax.lax.conv_general_dilated(x, p["kernel"], (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    expected = np.maximum(conv + p["bias"], 0.0).mean(axis=(1, 2))
    np.testing.assert_allclose(acts["conv0"], expected, rtol=1e-5, atol=1e-6)
