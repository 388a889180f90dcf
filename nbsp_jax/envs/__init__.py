"""Host environment pools of ``num_seeds * num_envs`` envs seen as ``[S, E, ...]`` arrays:
Meta-World v3 (:mod:`~nbsp_jax.envs.metaworld`, EnvPool or the ``metaworld`` package) and
Atari (:mod:`~nbsp_jax.envs.atari`, EnvPool). They know no buffer, agent or memory budget."""

from nbsp_jax.envs.atari import NUM_ACTIONS, OBS_SHAPE, AtariSeedVecEnv, atari_games, check_game
from nbsp_jax.envs.metaworld import (
    ACTION_DIM,
    BACKENDS,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    SeedVecEnv,
    check_task,
    metaworld_tasks,
)

__all__ = ["ACTION_DIM", "BACKENDS", "MAX_EPISODE_STEPS", "NUM_ACTIONS", "OBS_DIM", "OBS_SHAPE",
           "AtariSeedVecEnv", "SeedVecEnv", "atari_games", "check_game", "check_task",
           "metaworld_tasks"]
