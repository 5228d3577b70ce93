"""The parts of the five end-of-training tests that ``benchmark.py`` runs.

``settings`` (what to run, validated before training), ``passes`` (one timed inference
pass over a test set, one MAC count), ``measurement`` (timers, peak memory), ``macs``
(ptflops), ``records`` (``benchmark.json`` / ``.csv``; the names in ``ssl_ctc.names``) and
``summary`` (the table and plots over experiments); ``grid`` and ``paper``: the paper's
grid as data, and the comparison with its numbers.
"""
