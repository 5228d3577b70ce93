#!/usr/bin/env python3
"""Run a strategy Brain with every process recording the utterance ids it trains on.

Test helper for torchrun runs: before each training batch, a process appends the
batch's ids to ``<output_folder>/train_ids_rank<RANK>.txt``, so a test can check
that the processes trained on disjoint shards of the data.

Usage::

    torchrun --standalone --nproc_per_node=2 tests/record_train_ids.py \
        ssl_ctc.downsampling.DownsampledBrain hparams/sig_down8000.yaml \
        --distributed_backend gloo ...
"""

import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ssl_ctc.benchmarking.five_tests import benchmark_experiment  # noqa: E402
from ssl_ctc.recipe import run_recipe  # noqa: E402  (needs REPO on the path)


def recording(brain_class):
    """Subclass ``brain_class`` so that ``fit_batch`` first records the batch's ids."""

    class RecordingBrain(brain_class):
        def fit_batch(self, batch):
            rank = os.environ.get("RANK", "0")
            path = os.path.join(self.hparams.output_folder, f"train_ids_rank{rank}.txt")
            with open(path, "a", encoding="utf-8") as ids_file:
                ids_file.writelines(f"{utterance_id}\n" for utterance_id in batch.id)
            return super().fit_batch(batch)

    return RecordingBrain


if __name__ == "__main__":
    brain_class_path, *recipe_argv = sys.argv[1:]
    module_name, _, class_name = brain_class_path.rpartition(".")
    brain_class = getattr(importlib.import_module(module_name), class_name)
    run_recipe(recording(brain_class), recipe_argv, benchmark=benchmark_experiment)
