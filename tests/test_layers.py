"""The package's layer rules (README, "Architecture"), read from the imports with ``ast``.

Each layer may import only the layers listed for it (module-level and function-level imports
alike); benchmarks, experiments and tests use public names only.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbsp_jax"

# Layer -> the other layers it may import. A layer is a subpackage or a top-level module.
ALLOWED = {
    "types": set(),
    "layout": set(),
    "metrics": set(),
    "networks": {"types", "layout"},
    "buffers": {"types", "layout"},
    "envs": {"types", "layout"},
    "agents": {"networks", "types", "layout"},
    "method": {"networks", "types", "layout"},
    "domains": {"agents", "buffers", "envs", "method", "networks", "metrics", "types", "layout"},
    # training reaches agents, envs and buffers only through a domain
    "training": {"domains", "method", "workdir", "config", "metrics", "types", "layout"},
    "workdir": {"metrics"},  # host-side files: no jax layer
    "config": {"domains", "method", "networks"},
    "train": {"config", "training", "workdir"},
    "__init__": None,  # the flat public API: anything
}
JAX_LAYERS = {"networks", "buffers", "envs", "agents", "method", "domains", "training"}


def layer_of(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_layers(path: pathlib.Path) -> set[tuple[str, int]]:
    """``(layer, line)`` of every ``nbsp_jax`` layer that ``path`` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "nbsp_jax" else [
                f"nbsp_jax.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "nbsp_jax" and len(parts) > 1:
                out.add((parts[1], node.lineno))
    return out


def violations(root: pathlib.Path = PACKAGE) -> list[str]:
    """Every import of the package under ``root`` that breaks :data:`ALLOWED`."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        layer = layer_of(path, root)
        if layer not in ALLOWED:
            bad.append(f"{path.relative_to(root)}: layer {layer!r} has no rule in ALLOWED")
            continue
        allowed = ALLOWED[layer]
        if allowed is None:
            continue
        for other, line in sorted(imported_layers(path)):
            if other != layer and other not in allowed:
                bad.append(f"{path.relative_to(root)}:{line}: {layer} imports {other}")
    return bad


def private_uses(path: pathlib.Path) -> list[str]:
    """Private names of ``nbsp_jax`` that ``path`` imports or reaches as attributes."""
    tree = ast.parse(path.read_text())
    bound, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nbsp_jax"):
            for a in node.names:
                if a.name.startswith("_"):
                    bad.append(f"{path.name}:{node.lineno}: imports {node.module}.{a.name}")
                bound.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            bound.update(a.asname or a.name.split(".")[0] for a in node.names
                         if a.name.startswith("nbsp_jax"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in bound):
            bad.append(f"{path.name}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return bad


def test_package_follows_the_layer_rules():
    assert violations() == []


def test_layer_test_catches_a_planted_break(tmp_path):
    """A scratch copy of the package in which the method imports an agent fails the rules."""
    import shutil

    copy = tmp_path / "nbsp_jax"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    scores = copy / "method" / "scores.py"
    scores.write_text(scores.read_text().replace(
        "from nbsp_jax.types import SACState", "from nbsp_jax.agents.sac import SACState"))
    bad = violations(copy)
    assert len(bad) == 1 and bad[0].startswith(f"method{os.sep}scores.py:")
    assert bad[0].endswith(": method imports agents")


def test_workdir_imports_no_jax_layer():
    for path in (PACKAGE / "workdir").rglob("*.py"):
        assert not {layer for layer, _ in imported_layers(path)} & JAX_LAYERS, path


@pytest.mark.parametrize("folder", ["benchmarks", "experiments", "tests", "examples"])
def test_public_names_only(folder):
    bad = [b for p in sorted((ROOT / folder).rglob("*.py")) for b in private_uses(p)]
    assert bad == []
