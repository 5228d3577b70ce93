"""Names of the five tests and of the files an experiment holds, without heavy imports.

``benchmarking.records`` writes them; ``benchmarking.grid``, ``reproduce_paper.py`` and
the inference folder's loader read them. This module imports nothing, so that the grid
stays free of torch and the deployment runtime free of the benchmark.

Usage::

    from ssl_ctc.names import CPU_TESTS, RESULTS_JSON
"""

# Test names of the records: the paper's five tests ((name, uses the LM); MACs counted once).
GPU_TESTS = (("gpu_greedy", False), ("gpu_lm", True))
CPU_TESTS = (("cpu_greedy", False), ("cpu_lm", True))
MAC_TEST = "macs"

# An experiment's records and the hyperparameters SpeechBrain saves in its output folder.
RESULTS_JSON = "benchmark.json"
RESULTS_CSV = "benchmark.csv"
EXPERIMENT_HPARAMS = "hyperparams.yaml"

# The suffix of a distilled model's name in its records ("SD2 +KD": ``ssl_ctc.distillation``).
DISTILLED_NAME_SUFFIX = " +KD"
