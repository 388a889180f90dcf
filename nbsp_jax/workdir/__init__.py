"""The files of a workdir (host-side): checkpoints, JSONL/TensorBoard logs, results and plots."""

from nbsp_jax.workdir.checkpoint import Checkpointer
from nbsp_jax.workdir.logs import Progress, SeedWriters
from nbsp_jax.workdir.results import (
    PRESENTATION,
    library_versions,
    merge_process_results,
    prepare_workdir,
    results_dict,
    results_table,
    write_results,
)

__all__ = ["PRESENTATION", "Checkpointer", "Progress", "SeedWriters", "library_versions",
           "merge_process_results", "prepare_workdir", "results_dict", "results_table",
           "write_results"]
