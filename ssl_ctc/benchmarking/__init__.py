"""The five end-of-training tests (``five_tests``) and their parts.

``five_tests`` (``run_five_tests``, ``benchmark_experiment``: what the strategy scripts run
after training), ``settings`` (what to run, validated before training), ``passes`` (one
timed inference pass over a test set, one MAC count), ``measurement`` (timers, peak memory),
``macs`` (ptflops), ``records`` (``benchmark.json`` / ``.csv``; the names in
``ssl_ctc.names``) and ``summary`` (the table and plots over experiments:
``benchmark.py summarize``); ``grid`` and ``paper``: the paper's grid as data, and the
comparison with its numbers.
"""
