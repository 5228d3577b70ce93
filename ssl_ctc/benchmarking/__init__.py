"""The parts of the five end-of-training tests that ``benchmark.py`` runs.

``settings`` (what to run, validated before training), ``measurement`` (timers, peak
memory), ``macs`` (ptflops), ``records`` (``benchmark.json`` / ``.csv``) and
``summary`` (the table and plots over experiments).
"""
