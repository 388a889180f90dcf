"""Evaluation of every task after every phase (one row of ``sr``), and the environment seeds
of every pool a run creates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nbsp_jax.training.learner import Learner, placed_like, seed_keys


def env_seed(config, phase: int, purpose: int = 0, restart: int = 0,
             envs_per_seed: int = 1) -> int:
    """Base environment seed of a pool of ``envs_per_seed`` envs per seed (training:
    ``purpose`` 0; evaluation of task ``i``: ``1 + i``, the same after every phase so that
    phases are compared on the same episodes).

    Derived by hashing, so pools of different runs, phases, purposes and restarts practically
    never share environment seeds (a pool uses ``base .. base + S * E - 1``, env ``k`` seed
    ``base + k``). The base is shifted by ``config.seed_offset * envs_per_seed``, so global seed
    ``g``'s envs are the same whichever process of a multi-process run steps them.
    """
    seq = np.random.SeedSequence([config.seed, phase, purpose, restart])
    base = int(seq.generate_state(1)[0] % (2**31 - 2**20))
    return base + config.seed_offset * envs_per_seed


def evaluate(learner: Learner, actor_params, task: str, config, task_index: int,
             sampled: bool = False, last_step: bool = False):
    """``sr`` entries per seed ``[S]``: the policy's score on ``task`` over ``eval_episodes``.

    One pool of ``S * eval_episodes`` envs runs one episode each, vmapped over seeds.
    Meta-World: success rate of the deterministic policy (success = any step succeeded, as
    Meta-World and Continual World count it), or with ``sampled`` of the training policy (as
    training success is measured). Atari: the policy's mean raw return of whole games,
    normalised by Table 7.

    With ``last_step``, returns ``(score [S], last [S] or None)``: ``last`` is the success rate
    at the episode's last step (the convention of CoTASP and others), from the same episodes;
    ``None`` for Atari.
    """
    act = learner.act_sampled_eval if sampled else learner.act_eval
    n, dom = config.eval_episodes, learner.domain
    env = dom.make_env(task, n, env_seed(config, 0, 1 + task_index, envs_per_seed=n),
                       train=False)
    keys = seed_keys(config.seed + 1 + task_index, config.num_seeds, config.seed_offset)
    leaves = jax.tree.leaves(actor_params)
    keys = placed_like(keys, leaves[0]) if leaves else keys
    obs = env.reset()
    success = np.zeros((config.num_seeds, n), bool)
    at_end = np.zeros((config.num_seeds, n), bool)  # success on the episode's last step
    ret = np.zeros((config.num_seeds, n))
    finished = np.zeros((config.num_seeds, n), bool)
    while not finished.all():
        actions, keys = act(actor_params, jnp.asarray(obs), keys)
        step, _ = env.step(np.asarray(actions))
        goal = dom.goal_step(env, step)
        success |= goal.success & ~finished
        ret += np.where(goal.valid & ~finished, goal.reward, 0.0)
        ends = goal.valid & (goal.terminated | goal.truncated) & ~finished
        at_end |= goal.success & ends
        finished |= ends
        obs = step.obs
    env.close()
    asr = dom.metric == "asr"
    score = dom.eval_score(task, success if asr else ret)
    if not last_step:
        return score
    return score, (dom.eval_score(task, at_end) if asr else None)
