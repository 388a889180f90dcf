"""What every test shares: the one tiny config tests build on (two seeds of Meta-World reach,
[32, 32] networks, 600 env steps, learning after 200; every test overrides only the fields it
is about), and a persistent XLA compilation cache.

The cache (``.jax_cache/`` at the repository root, or ``$JAX_COMPILATION_CACHE_DIR``) is set
through the environment, so the training runs that tests start as subprocesses share it with
this process: the suite compiles the same tiny shapes in many fresh interpreters.

The tests also run XLA with LLVM's optimisations off (``--xla_backend_optimization_level=0``,
unless ``XLA_FLAGS`` already sets a level): their shapes are tiny, so compiling dominates
their time, and the flag halves it (fast tier, cold cache, 2 workers: see the README). It
changes how fast the generated code runs and, in the last bits, the order of some float sums;
benchmarks and training runs outside the tests keep XLA's default. Subprocesses that need more
flags take them from ``xla_env``, which keeps this one.
"""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
_UNOPTIMIZED = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_UNOPTIMIZED}".strip()

from nbsp_jax.config import base_config  # noqa: E402  (after the cache settings above)


def xla_env(*flags, **variables):
    """``os.environ`` with ``flags`` appended to its ``XLA_FLAGS`` and ``variables`` set: the
    environment of a test's subprocess, ``xla_env('--xla_force_host_platform_device_count=2')``.
    """
    base = os.environ.get("XLA_FLAGS", "")
    return {**os.environ, "XLA_FLAGS": " ".join((base, *flags)).strip(), **variables}


def tiny_config(**overrides):
    """``base_config()`` shrunk to run a phase in seconds, with ``overrides`` applied."""
    c = base_config()
    c.tasks = ("reach",)
    c.num_seeds = 2
    c.hidden = (32, 32)
    c.batch_size = 32
    c.steps_per_task = 600
    c.learning_starts = 200
    c.buffer_size = 2_000
    c.chunk_steps = 50
    c.eval_episodes = 1
    c.log_every_steps = 100
    c.progress = False
    for k, v in overrides.items():
        c[k] = v
    return c
