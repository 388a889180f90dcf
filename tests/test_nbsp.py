"""NBSP inside the agent: recording, method switches, masks in the optimizer, replay cadence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax import method as nbsp_method
from nbsp_jax.agents import sac
from nbsp_jax.buffers import transitions as replay
from nbsp_jax.method import GoalRecorder, MaskedScaleState, get_masks
from nbsp_jax.training import make_learner, seed_keys
from nbsp_jax.types import Sampler, Step
from tests.conftest import tiny_config


def _filled(capacity, value, obs_dim=39, action_dim=4, n=None):
    n = capacity if n is None else n
    buf = replay.init_buffer(capacity, obs_dim, action_dim)
    k = jax.random.split(jax.random.key(n), 2)
    rows = replay.Transition(jax.random.normal(k[0], (n, obs_dim)), jnp.zeros((n, action_dim)),
                             jnp.arange(n, dtype=jnp.float32) + value,
                             jax.random.normal(k[1], (n, obs_dim)), jnp.zeros(n))
    return replay.add(buf, rows, jnp.ones(n, bool))


def test_replay_cadence_every_kth_step():
    agent = sac.make_sac(39, 4, hidden=(8,), batch_size=16)
    current, pre = _filled(50, 0.0), _filled(50, 1000.0)
    sampler = nbsp_method.replay_sampler(replay.sampler(current, agent.batch_size),
                                         replay.sampler(pre, agent.batch_size), pre.size > 0, 10)
    plan = sampler.draw(jax.random.key(0), 31)
    take = jax.jit(sampler.take)
    row = lambda g: jax.tree.map(lambda x: x[g], plan)
    from_pre = [bool(take(row(g), jnp.int32(g)).reward.min() >= 1000) for g in range(31)]
    assert from_pre == [g % 10 == 0 for g in range(31)]
    # An empty earlier-task buffer is never used.
    empty = replay.init_buffer(50, 39, 4)
    sampler = nbsp_method.replay_sampler(replay.sampler(current, agent.batch_size),
                                         replay.sampler(empty, agent.batch_size),
                                         empty.size > 0, 10)
    plan = jax.tree.map(lambda x: x[0], sampler.draw(jax.random.key(0), 1))
    assert float(sampler.take(plan, jnp.int32(0)).reward.max()) < 1000


def test_store_for_replay_draws_distinct_filled_rows():
    cur = _filled(100, 0.0, n=60)  # rows 0..59 filled, rewards 0..59
    pre = replay.init_buffer(200, 39, 4)
    pre = replay.store_for_replay(pre, cur, jax.random.key(0), store_size=25)
    got = np.asarray(pre.data.reward[:25])
    assert int(pre.size) == 25 and len(set(got.tolist())) == 25 and got.max() < 60
    # Asking for more than is there stores everything once.
    pre = replay.store_for_replay(pre, cur, jax.random.key(1), store_size=80)
    assert int(pre.size) == 25 + 60
    assert sorted(np.asarray(pre.data.reward[25:85]).tolist()) == list(range(60))


def _step(reward, success, done, valid):
    a = lambda x, dt: np.asarray(x, dt).reshape(1, 1)
    return Step(np.zeros((1, 1, 2), np.float32), a(reward, np.float32), a(False, bool),
                a(done, bool), a(success, bool), a(valid, bool))


def test_recorder_goal_metric_per_episode():
    rec = GoalRecorder(rows=6, num_seeds=1, num_envs=1, obs_dim=2, action_dim=1)
    # Episode A: 3 steps, succeeds at its 2nd step. Reset step. Episode B: 3 steps so far,
    # no success yet. The ring keeps the last 6 steps: A2, A3, reset, B1, B2, B3.
    seq = [(1, 0, 0, 1), (2, 1, 0, 1), (3, 0, 1, 1), (0, 0, 0, 0), (4, 0, 0, 1), (5, 0, 0, 1),
           (6, 0, 0, 1)]
    for i, (r, s, d, v) in enumerate(seq):
        rec.add(np.full((1, 1, 2), i, np.float32), np.zeros((1, 1, 1)), _step(r, s, d, v))
    out = rec.result()
    np.testing.assert_array_equal(out.obs[0, :, 0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(out.valid[0], [1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(out.success[0][out.valid[0]], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out.ret[0][out.valid[0]], [6, 6, 15, 15, 15])


def _config(method, **kw):
    return tiny_config(**{"method": method, "hidden": (16, 16), "chunk_steps": 10,
                          "skill_proportion": 0.25, **kw})


def _end_task(learner, state, seed=0):
    t = 64
    k = jax.random.split(jax.random.key(seed), 3)
    obs = jax.random.normal(k[0], (2, t, 39))
    act = jax.random.uniform(k[1], (2, t, 4), minval=-1, maxval=1)
    goal = (jax.random.uniform(k[2], (2, t)) > 0.5).astype(jnp.float32)
    return learner.end_task(state, obs, act, goal, jnp.ones((2, t), bool), seed_keys(seed, 2))


@pytest.mark.parametrize("method", ["sac", "replay_only", "mask_only", "nbsp", "nbsp_hard"])
def test_method_switches(method):
    learner = make_learner(_config(method))
    spec = nbsp_method.METHODS[method]
    assert learner.spec == spec
    state = jax.vmap(lambda key: sac.init_state(learner.agent, key))(seed_keys(0, 2))
    has_masks = any(isinstance(x, MaskedScaleState) for x in jax.tree.leaves(
        state.opt, is_leaf=lambda x: isinstance(x, MaskedScaleState)))
    assert has_masks == spec.masks
    new, scores, masks, skill, _, _ = _end_task(learner, state)
    # 25% of 16 + 16 neurons per network = 8 skill neurons, per seed.
    assert int(sum(v.sum() for v in skill["actor"].values()) / 2) == 8
    if not spec.masks:
        return
    m = get_masks(new.opt.actor)["params"]["fc0"]["kernel"]  # [S, 16]
    sel = skill["actor"]["fc0"]
    expected = 0.0 if spec.hard else 0.2 * (1 - scores["actor"]["fc0"])
    np.testing.assert_allclose(m, np.where(sel, expected, 1.0), rtol=1e-6)
    np.testing.assert_array_equal(get_masks(new.opt.actor)["params"]["mean"]["kernel"], 1.0)
    if spec.hard:
        # Hard-masked units do not move under gradient updates.
        buf = jax.vmap(lambda _: _filled(64, 0.0))(jnp.arange(2))
        before = jax.device_get((new.params.actor, new.params.q["qf1"]))  # update donates `new`
        after, _ = learner.update(new, buf, buf, jnp.int32(0), jnp.ones(2, bool))
        for net, params_before, params_after in (
            ("actor", before[0], after.params.actor),
            ("qf1", before[1], after.params.q["qf1"]),
        ):
            for layer in ("fc0", "fc1"):
                s = np.asarray(skill[net][layer])  # [S, N]
                kb = np.asarray(params_before["params"][layer]["kernel"])
                ka = np.asarray(params_after["params"][layer]["kernel"])
                for seed in range(2):
                    np.testing.assert_array_equal(ka[seed][:, s[seed]], kb[seed][:, s[seed]])
                    assert not np.allclose(ka[seed][:, ~s[seed]], kb[seed][:, ~s[seed]])


def test_mask_target_and_min_policy():
    learner = make_learner(_config("nbsp", mask_target="actor", mask_policy="min"))
    state = jax.vmap(lambda key: sac.init_state(learner.agent, key))(seed_keys(0, 2))
    s1, _, m1, _, _, _ = _end_task(learner, state, seed=1)
    np.testing.assert_array_equal(get_masks(s1.opt.q)["qf1"]["params"]["fc0"]["kernel"], 1.0)
    s2, _, m2, _, _, _ = _end_task(learner, s1, seed=2)
    np.testing.assert_allclose(get_masks(s2.opt.actor)["params"]["fc1"]["bias"],
                               np.minimum(m1["actor"]["fc1"], m2["actor"]["fc1"]))


def test_weight_selector_ranks_by_incoming_norm():
    learner = make_learner(_config("nbsp", selector="weight"))
    state = jax.vmap(lambda key: sac.init_state(learner.agent, key))(seed_keys(0, 2))
    _, _, _, skill, _, _ = _end_task(learner, state)
    norms = {layer: np.linalg.norm(np.asarray(state.params.actor["params"][layer]["kernel"]),
                                   axis=1) for layer in ("fc0", "fc1")}  # [S, N]
    for seed in range(2):
        allnorm = np.concatenate([norms["fc0"][seed], norms["fc1"][seed]])
        top = set(np.argsort(-allnorm)[:8].tolist())
        sel = np.concatenate([skill["actor"]["fc0"][seed], skill["actor"]["fc1"][seed]])
        assert set(np.nonzero(sel)[0].tolist()) == top


def test_recorder_keeps_each_seeds_own_last_training_steps():
    """Seed 0 stops training after 4 steps; 10 more steps must not push its record out."""
    rec = GoalRecorder(rows=3, num_seeds=2, num_envs=1, obs_dim=1, action_dim=1)
    active = np.array([True, True])
    for t in range(14):
        if t == 4:
            active = np.array([False, True])
        step = Step(np.zeros((2, 1, 1), np.float32), np.ones((2, 1), np.float32),
                    np.zeros((2, 1), bool), np.zeros((2, 1), bool), np.zeros((2, 1), bool),
                    np.ones((2, 1), bool))
        rec.add(np.full((2, 1, 1), t, np.float32), np.zeros((2, 1, 1)), step, active)
    out = rec.result()
    np.testing.assert_array_equal(out.obs[0, :, 0], [1, 2, 3])  # seed 0: its last 3 steps
    np.testing.assert_array_equal(out.obs[1, :, 0], [11, 12, 13])
    assert out.valid.all()


@pytest.mark.parametrize("mode,expected", [("paper", 0.75), ("neutral", 0.5)])
def test_constant_neurons_config_reaches_the_scores(mode, expected):
    learner = make_learner(_config("nbsp", constant_neurons=mode))
    state = jax.vmap(lambda key: sac.init_state(learner.agent, key))(seed_keys(0, 2))
    # Kill actor unit fc0[0] in both seeds: its activation is 0 on every step.
    actor = jax.tree.map(lambda x: x, state.params.actor)
    actor["params"]["fc0"]["bias"] = actor["params"]["fc0"]["bias"].at[:, 0].set(-1e6)
    state = state._replace(params=state.params._replace(actor=actor))
    t = 64
    obs = jax.random.normal(jax.random.key(0), (2, t, 39))
    act = jnp.zeros((2, t, 4))
    goal = jnp.tile((jnp.arange(t) % 4 != 0).astype(jnp.float32), (2, 1))  # 75 % ones
    out = learner.end_task(state, obs, act, goal, jnp.ones((2, t), bool), seed_keys(1, 2))
    np.testing.assert_allclose(out.scores["actor"]["fc0"][:, 0], expected, rtol=1e-6)
    # The dead unit is reported as constant; the live ones of that layer are not.
    constant = np.asarray(out.constant["actor"]["fc0"])  # [S, 16]
    assert constant[:, 0].all() and not constant[:, 1:].any()


# ---------------------------------------------- replay reaches every kind of update (Eq. 8)
# Batches from the earlier-task buffer carry a tag in their observations; the wrapped updates
# report, through the update's own loss averages, whether the batch each one consumed had it.


def _tag_updates(monkeypatch, module, is_pre):
    critic, actor = module.critic_update, module.actor_alpha_update

    def tagged_critic(agent, state, batch, *args):
        state, info = critic(agent, state, batch, *args)
        return state, {**info, "q_replayed": is_pre(batch.obs).all().astype(jnp.float32)}

    def tagged_actor(agent, state, obs, *args):
        state, info = actor(agent, state, obs, *args)
        return state, {**info, "actor_replayed": is_pre(obs).all().astype(jnp.float32)}

    monkeypatch.setattr(module, "critic_update", tagged_critic)
    monkeypatch.setattr(module, "actor_alpha_update", tagged_actor)


def _tagged_buffer(capacity, tag):
    buf = _filled(capacity, 0.0)
    return buf._replace(data=buf.data._replace(obs=buf.data.obs.at[:, 0].set(tag)))


@pytest.mark.parametrize("pf", [1, 2])
def test_replayed_batches_reach_critics_actor_and_temperature(monkeypatch, pf):
    """Through the learner's real update (``sac.update_many`` + the loop's replay sampler):
    exactly 1 critic batch in 10 and 1 actor (= temperature) batch in 10 come from D_pre."""
    _tag_updates(monkeypatch, sac, lambda obs: obs[:, 0] >= 1000)
    learner = make_learner(_config("replay_only", policy_frequency=pf, chunk_steps=50))
    state = jax.vmap(lambda key: sac.init_state(learner.agent, key))(seed_keys(0, 2))
    current = jax.vmap(lambda _: _tagged_buffer(64, 0.0))(jnp.arange(2))
    pre = jax.vmap(lambda _: _tagged_buffer(64, 1000.0))(jnp.arange(2))
    n = 50  # updates per call, as the loop's chunk of 50 env steps
    totals = np.zeros(2)
    for step0 in (0, 50, 100, 150, 37500):
        state, info = learner.update(state, current, pre, jnp.int32(step0), jnp.ones(2, bool))
        q_count = np.asarray(info["q_replayed"]) * n  # [S]
        actor_count = np.asarray(info["actor_replayed"]) * n
        # The actor trains pf times on the batch of each group of pf steps whose group index
        # m = g // pf is a multiple of 10.
        groups = np.arange(step0 // pf, (step0 + n) // pf)
        np.testing.assert_allclose(q_count, 5)
        np.testing.assert_allclose(actor_count, pf * np.sum(groups % 10 == 0))
        if step0 < 200:
            totals += actor_count
    np.testing.assert_allclose(totals, 200 / 10)  # over 4 consecutive calls: exactly 1/10


def test_replayed_batches_reach_the_discrete_actor(monkeypatch):
    """Discrete SAC updates every network on every batch: 1 in 10 for each."""
    from nbsp_jax.agents import sac_discrete

    _tag_updates(monkeypatch, sac_discrete, lambda obs: obs[:, 0, 0, 0] == 255)
    agent = sac_discrete.make_sac_discrete((4, 12, 12), 3, hidden=(4,),
                                           convs=((4, 4, 2), (3, 3, 1), (2, 2, 1)),
                                           batch_size=2)
    state = sac_discrete.init_state(agent, jax.random.key(0))

    def sampler_of(value):
        obs = jnp.full((2, 4, 12, 12), value, jnp.uint8)
        batch = replay.Transition(obs, jnp.zeros(2, jnp.int32), jnp.zeros(2), obs, jnp.zeros(2))
        return Sampler(lambda key, n: jnp.zeros(n), lambda plan, step: batch)

    sampler = nbsp_method.replay_sampler(sampler_of(0), sampler_of(255), jnp.array(True), 10)
    run = jax.jit(lambda s, step0: sac_discrete.update_many(agent, s, sampler, 16, step0))
    for step0 in (0, 16, 32, 4000):
        state, info = run(state, jnp.int32(step0))
        expected = np.sum(np.arange(step0, step0 + 16) % 10 == 0)
        np.testing.assert_allclose(float(info["q_replayed"]) * 16, expected)
        np.testing.assert_allclose(float(info["actor_replayed"]) * 16, expected)


def test_task_window_is_a_uniform_sample_of_the_whole_task():
    """score_window='task': 100 rows over 10,000 steps of 10-step episodes (odd ones succeed)
    spread over the whole task, each row with its own episode's goal; 'last' keeps the end."""
    records = {}
    for window in ("task", "last"):
        rec = GoalRecorder(rows=100, num_seeds=2, num_envs=1, obs_dim=1, action_dim=1,
                           window=window, salt=3)
        for t in range(10_000):
            done, succ = t % 10 == 9, (t // 10) % 2 == 1 and t % 10 == 5
            step = Step(np.zeros((2, 1, 1), np.float32), np.ones((2, 1), np.float32),
                        np.zeros((2, 1), bool), np.full((2, 1), done), np.full((2, 1), succ),
                        np.ones((2, 1), bool))
            rec.add(np.full((2, 1, 1), t, np.float32), np.zeros((2, 1, 1)), step)
        records[window] = rec.result()
    out = records["task"]
    np.testing.assert_array_equal(out.obs[..., 0], out.step)  # row t holds step t
    np.testing.assert_array_equal(out.success, (out.step // 10) % 2)  # its episode's outcome
    np.testing.assert_array_equal(out.episode, out.step // 10)
    for s in range(2):
        quarters = np.bincount(out.step[s] // 2500, minlength=4)
        assert quarters.min() >= 15, quarters  # uniform: 25 expected per quarter
        assert len(set(out.step[s].tolist())) == 100  # distinct steps
    assert not np.array_equal(out.step[0], out.step[1])  # each seed samples on its own
    np.testing.assert_array_equal(records["last"].step[0], np.arange(9_900, 10_000))
