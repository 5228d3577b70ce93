"""The speed analysis behind ``speed_benchmark.py`` (not needed to train, test or deploy).

``brains`` (each variant of ``SPEED_VARIANTS`` in ``ssl_ctc.experiments.registry`` as its
Brain on a random encoder), ``synthetic_utterances``, ``random_encoders``,
``reference_workloads`` (GEMM limits, bare forwards), ``rows`` and ``onnx_rows`` (what is
timed and computed from the times), ``overheads`` (the five tests' path and the LM),
``runner`` (the run, step by step) and ``report`` (targets, ``speed.json``, the tables).
"""
