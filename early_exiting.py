#!/usr/bin/env python3
"""Fine-tune an SSL encoder with CTC exit heads on intermediate layers, then benchmark early exit.

Training sums the CTC losses of every exit; testing and the benchmark run
early-exit inference with the configured criterion, and again for each threshold
of ``exit_threshold_sweep`` (each its own benchmark record), without retraining
when run with ``--test_only``. The Brain is ``early_exiting.brain.EarlyExitBrain``
in the package beside this script (Python imports the package directory
``early_exiting/`` before this file of the same name).

Usage::

    python early_exiting.py hparams/early_exiting/early_exits.yaml \
        --data_folder /path/to/LibriSpeech
    python early_exiting.py hparams/early_exiting/early_exits.yaml \
        --data_folder /path/to/LibriSpeech --test_only \
        --exit_threshold_sweep "[0.01, 0.02, 0.05, 0.1]"

Authors
 * Recipe team 2026
"""

from early_exiting.brain import EarlyExitBrain
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.recipe import main

if __name__ == "__main__":
    main(EarlyExitBrain, benchmark_experiment)
