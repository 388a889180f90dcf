"""Per-neuron update masks as an optax transform (NBSP Eq. 6).

A neuron is one output unit of a layer, so a mask is one vector of shape ``(features,)`` per
parameter leaf, broadcast along the leaf's last axis: a Dense kernel ``(in, features)``, its bias
``(features,)`` and a Conv kernel ``(h, w, in, features)`` all share their layer's vector.

The masks live in the optimizer *state* (not in the transform's closure, unlike
``optax.masked``), so new masks after a task are new array values: a jitted update step does not
recompile, and under ``jax.vmap`` every seed carries its own masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "MaskedScaleState",
    "get_masks",
    "layer_paths",
    "masked_scale",
    "masks_from_layers",
    "ones_masks",
    "set_masks",
]

MASK_DTYPE = jnp.float32


class MaskedScaleState(NamedTuple):
    """Per-output-unit multipliers, one vector per parameter leaf."""

    masks: Any


def _unit_shape(leaf: Any) -> tuple[int, ...]:
    """Mask shape for a leaf: ``(leaf.shape[-1],)``, or ``()`` for a scalar."""
    return tuple(jnp.shape(leaf)[-1:])


def ones_masks(params: Any) -> Any:
    """All-ones masks for a param tree.

    Args:
      params: any pytree of arrays.

    Returns:
      A pytree with the structure of ``params``; each leaf is a float32 vector of ones of shape
      ``(leaf.shape[-1],)`` (shape ``()`` for a 0-d leaf).
    """
    return jax.tree.map(lambda p: jnp.ones(_unit_shape(p), MASK_DTYPE), params)


def masked_scale() -> optax.GradientTransformation:
    """Multiplies every update leaf by a per-output-unit mask held in the state.

    Put it *after* the optimizer: Adam divides by the running gradient scale, so a constant
    factor on the gradient is cancelled within about ``1 / (1 - b2)`` steps, whereas a factor on
    the update moves a masked unit exactly that factor as far. The masks start at ones (the
    transform is then the identity); install new ones with :func:`set_masks`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = {'kernel': jnp.ones((3, 2)), 'bias': jnp.zeros(2)}
      >>> opt = optax.chain(optax.adam(1e-3), masked_scale())
      >>> state = opt.init(params)
      >>> state = set_masks(state, {'kernel': jnp.array([1.0, 0.0]),
      ...                           'bias': jnp.array([1.0, 0.0])})
      >>> grads = {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones(2)}
      >>> updates, state = opt.update(grads, state, params)
      >>> bool((updates['kernel'][:, 1] == 0).all())  # unit 1 is frozen
      True

    Returns:
      An ``optax.GradientTransformation``. ``init(params)`` returns a
      :class:`MaskedScaleState` whose ``masks`` are :func:`ones_masks` of ``params``;
      ``update(updates, state, params=None)`` returns ``(updates * masks, state)`` with each
      mask broadcast along the last axis of its leaf (updates keep their dtype).
    """

    def init_fn(params):
        return MaskedScaleState(masks=ones_masks(params))

    def update_fn(updates, state, params=None):
        del params
        new_updates = jax.tree.map(lambda u, m: (u * m).astype(u.dtype), updates, state.masks)
        return new_updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_state(x: Any) -> bool:
    return isinstance(x, MaskedScaleState)


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _check_and_cast(old_masks: Any, new_masks: Any) -> Any:
    """Returns ``new_masks`` cast to the dtypes of ``old_masks``; raises on any mismatch."""
    old_flat, old_def = jax.tree_util.tree_flatten_with_path(old_masks)
    new_flat, new_def = jax.tree_util.tree_flatten_with_path(new_masks)
    if old_def != new_def:
        old_paths = {_path_str(p) for p, _ in old_flat}
        new_paths = {_path_str(p) for p, _ in new_flat}
        missing = sorted(old_paths - new_paths)
        extra = sorted(new_paths - old_paths)
        raise ValueError(
            "set_masks: mask tree structure does not match the optimizer's masks; "
            f"missing paths {missing}, unexpected paths {extra}"
            + ("" if missing or extra else f"; expected {old_def}, got {new_def}")
        )
    cast = []
    for (path, old), (_, new) in zip(old_flat, new_flat, strict=True):
        if jnp.shape(new) != jnp.shape(old):
            raise ValueError(
                f"set_masks: mask at {_path_str(path)} has shape {jnp.shape(new)}, "
                f"expected {jnp.shape(old)}"
            )
        cast.append(jnp.asarray(new, dtype=old.dtype))
    return jax.tree_util.tree_unflatten(old_def, cast)


def set_masks(opt_state: Any, masks: Any) -> Any:
    """Installs new masks in every :class:`MaskedScaleState` inside an optimizer state.

    Works on a bare ``MaskedScaleState``, on an ``optax.chain`` state (a tuple) and on any
    nesting of tuples, namedtuples, lists and dicts. The masks are cast to the state's dtype
    (float32), so calling this between calls of a jitted step causes no recompilation. It can be
    called inside ``jit`` and inside ``vmap`` (then ``masks`` has the per-seed shapes); outside
    ``vmap`` on a seed-batched state, ``masks`` must carry the same leading seed axis.

    Args:
      opt_state: an optimizer state containing at least one ``MaskedScaleState``.
      masks: a pytree with the structure of the params the optimizer was initialised with;
        each leaf an array of shape ``(leaf.shape[-1],)`` (``()`` for a 0-d param), e.g. from
        :func:`masks_from_layers`.

    Returns:
      ``opt_state`` with the masks replaced everywhere; all other entries are unchanged.

    Raises:
      ValueError: if no ``MaskedScaleState`` is found, or if the structure or a shape of
        ``masks`` does not match the state's masks (the path and shapes are named).
    """
    found = 0

    def replace(x):
        nonlocal found
        if _is_state(x):
            found += 1
            return x._replace(masks=_check_and_cast(x.masks, masks))
        return x

    new_state = jax.tree.map(replace, opt_state, is_leaf=_is_state)
    if not found:
        raise ValueError(
            "set_masks: no MaskedScaleState found in the optimizer state; build the optimizer "
            "with masked_scale(), e.g. optax.chain(optax.adam(lr), masked_scale())"
        )
    return new_state


def get_masks(opt_state: Any) -> Any:
    """Returns the masks of the first :class:`MaskedScaleState` inside ``opt_state``.

    Args:
      opt_state: an optimizer state containing at least one ``MaskedScaleState``.

    Returns:
      The masks tree (same structure as the params, leaves ``(leaf.shape[-1],)``).

    Raises:
      ValueError: if no ``MaskedScaleState`` is found.
    """
    return find_state(opt_state, MaskedScaleState, "get_masks").masks


def find_state(opt_state: Any, cls: type, caller: str) -> Any:
    """The first state of type ``cls`` (a transform's NamedTuple state) inside ``opt_state``.

    Raises:
      ValueError: naming ``caller`` and ``cls`` if there is none (the transform is not chained
        into this optimizer).
    """
    is_state = lambda x: isinstance(x, cls)
    for leaf in jax.tree.leaves(opt_state, is_leaf=is_state):
        if is_state(leaf):
            return leaf
    raise ValueError(f"{caller}: no {cls.__name__} found in the optimizer state; chain its "
                     "transform into the optimizer")


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _leaf_modules(params: Any) -> list[tuple[tuple, str]]:
    """(path, module path) for every leaf; the outer ``'params'`` collection key is dropped."""
    strip = isinstance(params, Mapping) and "params" in params
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [_key_name(k) for k in path]
        if strip and names and names[0] == "params":
            names = names[1:]
        out.append((path, "/".join(names[:-1])))
    return out


def layer_paths(params: Any) -> list[str]:
    """Module paths (joined by ``'/'``) of the layers that own leaves in ``params``.

    Args:
      params: a Flax param dict, with or without the outer ``'params'`` key.

    Returns:
      Sorted unique module paths, e.g. ``['fc0', 'fc1', 'out']`` or ``['trunk/conv0', ...]``.
    """
    return sorted({m for _, m in _leaf_modules(params)})


def masks_from_layers(params: Any, layer_masks: Mapping[str, Any]) -> Any:
    """Builds a masks tree from one vector per layer.

    Args:
      params: a Flax param dict such as ``{'params': {'fc0': {'kernel': (in, 768),
        'bias': (768,)}, ...}}``, or the same without the outer ``'params'`` key. Use the tree
        the optimizer was initialised with.
      layer_masks: maps a module path (names joined by ``'/'``, e.g. ``'fc0'`` or
        ``'trunk/conv0'``) to a vector of shape ``(features,)``. Every leaf directly owned by
        that module (its kernel and bias) gets the vector; every other leaf gets ones.

    Returns:
      A masks tree with the structure of ``params``, float32 leaves of shape
      ``(leaf.shape[-1],)``, ready for :func:`set_masks`.

    Raises:
      ValueError: naming the unknown layer keys and the valid ones, or if a vector's shape is
        not ``(features,)`` of its layer.
    """
    modules = _leaf_modules(params)
    valid = sorted({m for _, m in modules})
    unknown = sorted(set(layer_masks) - set(valid))
    if unknown:
        raise ValueError(f"masks_from_layers: unknown layer keys {unknown}; valid layers: {valid}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for leaf, (path, module) in zip(leaves, modules, strict=True):
        shape = _unit_shape(leaf)
        if module in layer_masks:
            vec = jnp.asarray(layer_masks[module], MASK_DTYPE)
            if vec.shape != shape:
                raise ValueError(
                    f"masks_from_layers: mask for layer '{module}' has shape {vec.shape}, "
                    f"but leaf {_path_str(path)} of shape {jnp.shape(leaf)} needs {shape}"
                )
            out.append(vec)
        else:
            out.append(jnp.ones(shape, MASK_DTYPE))
    return jax.tree_util.tree_unflatten(treedef, out)
