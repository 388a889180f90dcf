"""The benchmark suite's report names the code it measured."""

import json
import os

from benchmarks.run_all import markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_names_the_commit_of_the_run():
    # A real record of the suite (results/benchmarks/run_all), written before it had a commit.
    rec = json.load(open(os.path.join(ROOT, "results", "benchmarks", "run_all",
                                      "benchmarks.json")))
    rec.pop("commit", None)
    first = markdown(rec).splitlines()[0]
    assert first.endswith("commit not recorded."), first
    first = markdown({**rec, "commit": "b138cee"}).splitlines()[0]
    assert first.startswith(f"Machine: {rec['machine']}; jax {rec['jax_version']}"), first
    assert first.endswith("; commit b138cee."), first
