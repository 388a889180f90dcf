"""The 2-device check of tests/test_sharding.py: a 4-seed SAC update split over 2 forced host
devices (GSPMD and shard_map) against one device. Prints ``RESULT <json>``; run with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``."""
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nbsp_jax import method as masking  # masked_scale, get_masks, set_masks
from nbsp_jax.agents import sac
from nbsp_jax.buffers import transitions as replay
from nbsp_jax.training import sharding as sh


def to_host(tree):
    """NumPy copies (typed PRNG keys as their key data)."""
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    raw = lambda x: jax.random.key_data(x) if is_key(x) else x
    return jax.tree.map(lambda x: np.asarray(jax.device_get(raw(x))), tree)


S, D, A, CAP, FILL, CALLS, PER_CALL = 4, 39, 4, 256, 200, 5, 4
mesh = sh.seed_mesh()
out = {"devices": mesh.devices.size}

@functools.cache
def agent_for(masked):
    opt = (lambda lr: optax.chain(optax.adam(lr), masking.masked_scale())) if masked else (
        lambda lr: None)
    return sac.make_sac(D, A, hidden=(32, 32), batch_size=16, actor_opt=opt(3e-4),
                        q_opt=opt(1e-3))

def random_masks(opt_state, key):
    # 0/1 per output unit, different for every seed (NBSP's hard masks).
    leaves, tdef = jax.tree.flatten(masking.get_masks(opt_state))
    ks = jax.random.split(key, len(leaves))
    new = [jax.random.bernoulli(k, 0.7, m.shape).astype(m.dtype)
           for k, m in zip(ks, leaves, strict=True)]
    return masking.set_masks(opt_state, tdef.unflatten(new))

inits = {}

def init(agent, masked):
    # Seed-batched state and a buffer holding FILL random transitions, on one device.
    def one(key):
        k_init, k_data, k_a, k_q = jax.random.split(key, 4)
        state = sac.init_state(agent, k_init)
        if masked:
            opt = state.opt._replace(actor=random_masks(state.opt.actor, k_a),
                                     q=random_masks(state.opt.q, k_q))
            state = state._replace(opt=opt)
        k = jax.random.split(k_data, 5)
        batch = replay.Transition(
            jax.random.normal(k[0], (CAP, D)),
            jax.random.uniform(k[1], (CAP, A), minval=-1, maxval=1),
            jax.random.normal(k[2], (CAP,)),
            jax.random.normal(k[3], (CAP, D)),
            jax.random.bernoulli(k[4], 0.1, (CAP,)).astype(jnp.float32))
        buf = replay.add(replay.init_buffer(CAP, D, A), batch, jnp.arange(CAP) < FILL)
        return state, buf
    if agent not in inits:  # compiled once per agent
        inits[agent] = jax.jit(jax.vmap(one))
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(jnp.arange(S))
    return inits[agent](keys)

def updater(agent, mode, mesh=None):
    # As in the training loop: one jitted call of PER_CALL updates over all seeds, the
    # input state donated; 'map' as training.over_seeds(..., 'map', ...).
    def one(st, b, step0):
        return sac.update_many(agent, st, replay.sampler(b, agent.batch_size), PER_CALL, step0)
    if mode == "vmap":
        fn = jax.vmap(one, in_axes=(0, 0, None))
    else:
        fn = lambda st, b, step0: jax.lax.map(lambda x: one(x[0], x[1], step0), (st, b))
    if mesh is not None:
        fn = sh.seed_parallel(fn, mesh, (0, 0, None))
    return jax.jit(fn, donate_argnums=0)

def run(agent, masked, mode, how):
    # how: 'one' (single device), 'gspmd' (sharded inputs, plain jit), 'shard_map'.
    state, buf = init(agent, masked)
    init_params = to_host(state.params)
    if how != "one":
        state, buf = sh.shard_seeds((state, buf), mesh)
    update = updater(agent, mode, mesh if how == "shard_map" else None)
    t0 = time.perf_counter()
    for i in range(CALLS):
        state, info = update(state, buf, jnp.int32(i * PER_CALL))
        if i == 0:
            first = to_host(state.params)
    jax.block_until_ready(state)
    return dict(state=state, buf=buf, info=info, init=init_params, first=first,
                t=time.perf_counter() - t0)

def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

def close(a, b, atol=1e-6):
    return all(np.allclose(x, y, rtol=1e-5, atol=atol) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

refs, out["runs"] = {}, {}
for name, masked, mode, how in (
        ("adam", False, "vmap", "gspmd"),
        ("masked", True, "vmap", "gspmd"),
        ("masked", True, "map", "shard_map")):
    agent = agent_for(masked)
    if (name, mode) not in refs:
        refs[name, mode] = run(agent, masked, mode, "one")
    ref, got = refs[name, mode], run(agent, masked, mode, how)
    leaves = jax.tree.leaves((got["state"], got["buf"], got["info"]))
    ref_host, got_host = to_host(ref["state"]), to_host(got["state"])
    out["runs"][f"{name}/{mode}/{how}"] = {
        "ref_on_one_device": all(len(x.sharding.device_set) == 1
                                 for x in jax.tree.leaves(ref["state"])),
        "all_seed_sharded": all(x.sharding.is_equivalent_to(sh.seed_sharding(mesh), x.ndim)
                                for x in leaves),
        "shard_rows": sorted({s.data.shape[0] for x in leaves for s in x.addressable_shards}),
        "shard_devices": sorted({len(x.addressable_shards) for x in leaves}),
        "first_diff": max_diff(ref["first"], got["first"]),
        "first_close": close(ref["first"], got["first"], atol=1e-6 if mode == "map" else 1e-5),
        "params_diff": max_diff(ref_host.params, got_host.params),
        "params_close": close(ref_host.params, got_host.params),
        "state_equal": all(np.array_equal(x, y) for x, y in zip(
            jax.tree.leaves(ref_host), jax.tree.leaves(got_host), strict=True)),
        "info_diff": max_diff(to_host(ref["info"]), to_host(got["info"])),
        "info_rel": max(float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-8))
                        for x, y in zip(jax.tree.leaves(to_host(ref["info"])),
                                        jax.tree.leaves(to_host(got["info"])), strict=True)),
        "keys_equal": bool(np.array_equal(ref_host.key, got_host.key)),
        "params_moved": max_diff(got["init"], got_host.params),
        "t_ref_s": ref["t"], "t_sharded_s": got["t"],
    }
# Control: the same single-device run compiled two ways (vmap vs lax.map) also drifts.
out["control_diff"] = max_diff(to_host(refs["masked", "vmap"]["state"].params),
                               to_host(refs["masked", "map"]["state"].params))

errors = []
for fn in (lambda: sh.shard_seeds({"x": np.zeros((3, 5))}, mesh),
           lambda: sh.check_divisible(3, mesh)):
    try:
        fn()
    except ValueError as e:
        errors.append(str(e))
out["errors"] = errors

print("RESULT " + json.dumps(out))
