"""The recipe's experiments: every row its drivers, demos and checks run (``registry``), and the
driver that runs a list of rows into one folder each (``driver``).

Usage::

    from ssl_ctc.experiments.registry import EMBEDDED_OVERRIDES, GRID, rows_named
"""
