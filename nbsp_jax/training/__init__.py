"""Training: the loop over phases (:func:`train_and_evaluate`), the learner's jitted functions,
the typed run state, one phase's named steps, evaluation and the seed axis over devices."""

from nbsp_jax.training.evaluate import env_seed, evaluate
from nbsp_jax.training.fork import FORK_FREE, check_fork_source, graft_state
from nbsp_jax.training.learner import (
    EndOfTask,
    Learner,
    actor_device,
    compilations,
    learner_devices,
    make_learner,
    over_seeds,
    run_mesh,
    seed_keys,
)
from nbsp_jax.training.loop import train_and_evaluate
from nbsp_jax.training.phase import FORK_POINT, PhaseRun, train_phase
from nbsp_jax.training.state import (
    FORMAT,
    PROBES,
    DeviceState,
    HostState,
    fresh_buffer,
    init_run,
    new_recorder,
    restore,
    save,
)

__all__ = [
    "FORK_FREE", "FORK_POINT", "FORMAT", "PROBES", "DeviceState", "EndOfTask", "HostState",
    "Learner", "PhaseRun", "actor_device", "check_fork_source", "compilations", "env_seed",
    "evaluate", "fresh_buffer", "graft_state", "init_run", "learner_devices", "make_learner",
    "new_recorder", "over_seeds", "restore", "run_mesh", "save", "seed_keys",
    "train_and_evaluate", "train_phase",
]
