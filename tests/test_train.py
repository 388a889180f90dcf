"""End-to-end runs of the training loop on real EnvPool Meta-World, and bad-input handling."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from nbsp_jax.config import validate
from nbsp_jax.training import train_and_evaluate
from nbsp_jax.workdir.results import source_commit
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    a = train_and_evaluate(tiny_config(), str(tmp_path_factory.mktemp("a")))
    b_dir = str(tmp_path_factory.mktemp("b"))
    b = train_and_evaluate(tiny_config(), b_dir)
    return a, b, b_dir


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.mark.slow
def test_same_seed_same_run(two_runs):
    a, b, _ = two_runs
    for x, y in zip(_leaves(a["state"]), _leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a["phases"][0]["episodic_return"] == b["phases"][0]["episodic_return"]


@pytest.mark.slow
def test_seeds_differ(two_runs):
    a, _, _ = two_runs
    actor = a["state"].params.actor["params"]["fc0"]["kernel"]  # [seeds, in, out]
    assert not np.allclose(actor[0], actor[1])
    ret = a["phases"][0]["episodic_return"]
    assert ret[0] != ret[1]  # different trajectories


@pytest.mark.slow
def test_workdir_outputs(two_runs):
    _, b, d = two_runs
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["num_seeds"] == 2 and cfg["tasks"] == ["reach"]
    for s in range(2):
        rows = [json.loads(x) for x in open(os.path.join(d, f"seed_{s}", "metrics.jsonl"))]
        tags = set().union(*rows)
        assert {"charts/episodic_return", "charts/success_rate", "charts/SPS",
                "losses/qf1_loss", "losses/actor_loss", "losses/alpha"} <= tags
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(
            os.path.join(d, f"seed_{s}")))
    results = json.load(open(os.path.join(d, "results.json")))
    assert results["phases"][0]["env_steps"] == 600
    # The code that wrote it: this checkout's commit (None only outside a git checkout).
    commit = results["versions"]["nbsp_jax_commit"]
    assert commit == source_commit()
    if os.path.exists(os.path.join(ROOT, ".git")) and shutil.which("git"):
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", commit), commit
    assert len(results["phases"][0]["eval_success_rate"]) == 2
    assert np.asarray(results["sr"]).shape == (2, 1, 1)
    for f in ("results.md", "success.png", "sr.png", "neurons/phase01_reach.npz"):
        assert os.path.exists(os.path.join(d, f)), f
    # Rerunning the finished run trains nothing and returns the same results.
    again = train_and_evaluate(tiny_config(), d)
    assert again["sr"] == results["sr"] and again["wall_s"] == results["wall_s"]


@pytest.mark.slow
def test_workdir_with_other_run_is_refused(two_runs):
    _, _, d = two_runs
    before = sorted(os.listdir(d)), open(os.path.join(d, "config.json")).read()
    with pytest.raises(FileExistsError, match=r"num_seeds: 2 -> 3"):
        train_and_evaluate(tiny_config(num_seeds=3), d)
    assert (sorted(os.listdir(d)), open(os.path.join(d, "config.json")).read()) == before


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("tasks", ("window-opne",), "window-open"),
        ("num_seeds", 0, "num_seeds"),
        ("steps_per_task", -5, "steps_per_task"),
        ("gamma", 1.5, "gamma"),
        ("env_backend", "mujoco", "envpool"),
        ("learning_starts", 10_000, "learning_starts"),
        ("alpha_logp", "stale", r"unknown config.alpha_logp 'stale'; valid choices"),
    ],
)
def test_bad_config_is_rejected(field, value, needle):
    c = tiny_config()
    c[field] = value
    with pytest.raises(ValueError, match=needle):
        validate(c)


@pytest.mark.parametrize("overrides,needle", [
    ({"num_seeds": 3}, r"num_seeds=3 must be a multiple of the number of processes \(2\)"),
    ({"seed_offset": 2}, r"seed_offset=2: a multi-process run sets it per process"),
])
def test_bad_multi_process_run_is_refused_before_writing(tmp_path, monkeypatch, overrides,
                                                          needle):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match=needle):
        train_and_evaluate(tiny_config(**overrides), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_presentation_fields_may_differ_on_resume(two_runs):
    """Display, logging cadence and checkpoint interval change no result: a finished run is
    reported again with other values of them (another field is refused, test above)."""
    a, _, d = two_runs
    again = train_and_evaluate(tiny_config(progress=True, log_every_steps=7,
                                           checkpoint_every_s=5), d)
    assert again["sr"] == a["sr"]


def test_cli_unknown_variant_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nbsp_jax.train", "--config", "configs/quickstart.py:smok",
         "--workdir", str(tmp_path / "w")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "nbsp_jax.train: error: unknown variant 'smok'; valid: '', 'smoke'"]
    assert not (tmp_path / "w").exists()


def test_cli_bad_task_fails_fast(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nbsp_jax.train", "--config", "configs/quickstart.py:smoke",
         "--workdir", str(tmp_path / "w"), "--config.tasks=('window-opne',)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "unknown Meta-World task 'window-opne'" in out.stderr
    assert "window-open" in out.stderr and "button-press-topdown" in out.stderr
    assert not (tmp_path / "w").exists()  # failed before anything was written


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                                        if f.endswith(".py")))
@pytest.mark.parametrize("variant", ["", "smoke"])
def test_configs_load(name, variant):
    validate(_load_config(name, variant))


def _load_config(name, variant):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "configs", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(variant)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                                        if f.startswith("metaworld_")))
def test_cpu_reduction_of_each_metaworld_config(name):
    # 200k steps per phase where 150k did not teach vanilla SAC the first task (docs/results.md).
    c = _load_config(name, "cpu")
    validate(c)
    assert (c.num_seeds, c.cycles, tuple(c.hidden)) == (5, 1, (256, 256))
    assert c.steps_per_task == (200_000 if name == "metaworld_button_window.py" else 150_000)


def test_workdir_written_before_a_field_existed_resumes_with_its_old_value(tmp_path):
    """A config.json without ``alpha_logp`` (written before the field) holds the value that
    reproduces it: 'fresh' for Meta-World SAC. The other value is refused."""
    from nbsp_jax.workdir.results import prepare_workdir

    d = str(tmp_path / "w")
    assert prepare_workdir(d, tiny_config()) is False
    path = os.path.join(d, "config.json")
    old = json.load(open(path))
    del old["alpha_logp"]
    json.dump(old, open(path, "w"))
    assert prepare_workdir(d, tiny_config()) is True
    with pytest.raises(FileExistsError, match=r"alpha_logp: 'fresh' -> 'reuse'"):
        prepare_workdir(d, tiny_config(alpha_logp="reuse"))
    # The later methods' fields: a run without them resumes with the config's defaults.
    from nbsp_jax.config import base_config
    from nbsp_jax.workdir.results import ADDED

    defaults = base_config()
    for field in set(ADDED) - {"alpha_logp"}:
        assert ADDED[field]({}) == defaults[field], field
        del old[field]
    json.dump(old, open(path, "w"))
    assert prepare_workdir(d, tiny_config()) is True
    with pytest.raises(FileExistsError, match=r"npc_c_max: 2.0 -> 3.0"):
        prepare_workdir(d, tiny_config(npc_c_max=3.0))


def test_fork_source_written_before_a_field_existed_is_accepted(tmp_path):
    """``fork_from`` reads the source's config.json the same way: a missing ``alpha_logp``
    holds the value that reproduces that run, so it forks; another value is refused."""
    from nbsp_jax.training import check_fork_source

    src = tmp_path / "src"
    (src / "fork_point" / "checkpoints" / "0").mkdir(parents=True)
    fields = json.loads(tiny_config().to_json_best_effort())
    del fields["alpha_logp"]
    (src / "config.json").write_text(json.dumps(fields))
    assert check_fork_source(tiny_config(fork_from=str(src)))["alpha_logp"] == "fresh"
    with pytest.raises(ValueError, match=r"alpha_logp: 'fresh' \(source\) vs 'reuse'"):
        check_fork_source(tiny_config(fork_from=str(src), alpha_logp="reuse"))


def test_source_commit_names_the_checkout_and_its_changes(tmp_path):
    """source_commit: a fresh repository's HEAD, '+dirty' after a tracked file changes,
    None for a folder that is no checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    assert source_commit(str(tmp_path)) == head
    (tmp_path / "f.txt").write_text("b")
    assert source_commit(str(tmp_path)) == head + "+dirty"
    # Changes under an ignored folder leave it clean.
    git("checkout", "-q", "f.txt")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.md").write_text("a")
    git("add", "results/r.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "results" / "r.md").write_text("b")
    assert source_commit(str(tmp_path)) == head + "+dirty"
    assert source_commit(str(tmp_path), ignore=("results",)) == head
    (tmp_path / "sub").mkdir()
    assert source_commit(str(tmp_path / "sub")) is None
    # With no root: the checkout that holds the running package (this one, in a clone).
    if os.path.exists(os.path.join(ROOT, ".git")):
        assert source_commit() == source_commit(ROOT) is not None
