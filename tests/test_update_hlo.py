"""The compiled update does no work beyond its arithmetic (read off its HLO; no timing).

1. A seed axis of size 1 is not vmapped: a size-1 vmap laid the weight gradients out
   ``[out, in]``, and every Adam and Polyak fusion read them through a transpose.
2. When every seed is active, the entry computation copies no parameter-sized buffer: selecting
   between old and new state needed the old one after the scan, defeating donation.
3. The update's loop draws no random numbers: a call's batch indices and noise are drawn
   before it. XLA:CPU lowers each threefry draw to a loop of small ops; inside the update's
   loop they doubled the ops it ran per update.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbsp_jax.config import atari_cycle
from nbsp_jax.training import make_learner, seed_keys
from tests.conftest import tiny_config

SHAPE = re.compile(r"=\s*[a-z0-9]+\[([0-9,]*)\]")


def _compiled(config):
    learner = make_learner(config)
    S = config.num_seeds
    state = jax.vmap(lambda k: learner.domain.init_state(learner.agent, k))(seed_keys(0, S))
    buf = jax.vmap(lambda _: learner.domain.init_buffer())(jnp.arange(S))
    text = learner.update_all.lower(state, buf, buf, jnp.int32(0)).compile().as_text()
    return text, state


def _instructions(text: str, op: str) -> list[tuple[int, ...]]:
    """Result shapes of every ``op(`` instruction in ``text``."""
    out = []
    for line in text.splitlines():
        if f" {op}(" in line and (m := SHAPE.search(line)):
            out.append(tuple(int(d) for d in m.group(1).split(",") if d))
    return out


def _entry(text: str) -> str:
    start = text.index("ENTRY")
    return text[start:text.index("\n}", start)]


def _computations(text: str) -> dict[str, list[str]]:
    comps, name = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name:
            comps[name].append(line)
    return comps


def _loops_inside_the_update_loop(text: str) -> list[str]:
    """The ``while`` ops reachable from the body of the update's loop (the loop that carries
    the float32 parameters)."""
    comps = _computations(text)
    body = next(re.search(r"body=%([\w.\-]+)", line).group(1)
                for lines in comps.values() for line in lines
                if " while(" in line and "f32[" in line.split(" while(")[0])
    seen, todo = set(), [body]
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for line in comps[c]:
            todo += re.findall(r"(?:calls|body|condition|to_apply|true_computation|"
                               r"false_computation)=%([\w.\-]+)", line)
            listed = re.search(r"branch_computations=\{([^}]*)\}", line)
            todo += re.findall(r"%([\w.\-]+)", listed.group(1)) if listed else []
    return [line.strip()[:120] for c in seen for line in comps[c] if " while(" in line]


def _parameter_shapes(state, S: int) -> tuple[set, set]:
    """(per-seed shapes of every weight matrix or conv kernel, seed-axis shapes of every
    state leaf with more than one element)."""
    leaves = jax.tree.leaves((state.params, state.opt))
    kernels = {tuple(x.shape[1:]) for x in leaves if x.ndim >= 3}
    buffers = {tuple(x.shape) for x in leaves if np.prod(x.shape[1:]) > 1}
    return kernels, buffers


def _check(text, state, S):
    kernels, buffers = _parameter_shapes(state, S)
    permuted = {tuple(sorted(k)) for k in kernels}
    for shape in _instructions(text, "transpose"):
        body = shape[1:] if len(shape) > 2 and shape[0] == S else shape
        assert tuple(sorted(body)) not in permuted, f"a parameter-shaped transpose {shape}"
    copies = [s for s in _instructions(_entry(text), "copy") if s in buffers]
    assert not copies, f"the entry copies state buffers {copies[:5]}"


@pytest.mark.parametrize("seeds, method", [(1, "sac"), (3, "nbsp")])
def test_metaworld_update_has_no_gradient_transpose_state_copy_or_inner_draw(seeds, method):
    """One compile per case checks all three: compiling the update is most of the cost."""
    # Distinct widths, so that a kernel's transpose cannot pass for another kernel.
    c = tiny_config(num_seeds=seeds, hidden=(48, 40), batch_size=8, method=method)
    text, state = _compiled(c)
    _check(text, state, seeds)
    assert _loops_inside_the_update_loop(text) == []


def test_loop_check_catches_random_numbers_drawn_inside_a_loop():
    def f(w, key):
        def body(c, i):
            noise = jax.random.normal(jax.random.fold_in(key, i), c.shape)
            return jnp.tanh(c @ w + noise), None
        return jax.lax.scan(body, jnp.ones((4, 8)), jnp.arange(5))[0]

    text = jax.jit(f).lower(jnp.ones((8, 8)), jax.random.key(0)).compile().as_text()
    assert _loops_inside_the_update_loop(text)


@pytest.mark.slow  # compiles a second full update; it checks the checker, not the code
def test_check_catches_the_size_one_vmap_and_the_select():
    """The checks fail on the update as it was: vmapped over one seed, with the select."""
    c = tiny_config(num_seeds=1, hidden=(48, 40), batch_size=8)
    learner = make_learner(c)
    state = jax.vmap(lambda k: learner.domain.init_state(learner.agent, k))(seed_keys(0, 1))
    buf = jax.vmap(lambda _: learner.domain.init_buffer())(jnp.arange(1))

    def old(state, buffer, pre, step0, active):
        new, info = learner.domain.update_many(
            learner.agent, state, learner.domain.sampler(learner.agent, buffer), 50, step0)
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), info

    fn = jax.jit(jax.vmap(old, in_axes=(0, 0, 0, None, 0)), donate_argnums=0)
    text = fn.lower(state, buf, buf, jnp.int32(0), jnp.ones(1, bool)).compile().as_text()
    with pytest.raises(AssertionError, match="transpose"):
        _check(text, state, 1)
    kernels, buffers = _parameter_shapes(state, 1)
    assert [s for s in _instructions(_entry(text), "copy") if s in buffers]


@pytest.mark.slow  # the full Nature CNN: about 20 s to compile
@pytest.mark.parametrize("seeds", [1, 2])
def test_atari_update_has_no_gradient_transpose_or_state_copy(seeds):
    c = atari_cycle(("Pong", "Bowling"), 10_000, "smoke")
    c.num_seeds, c.num_envs, c.buffer_size = seeds, 1, 64
    _check(*_compiled(c), seeds)
