#!/usr/bin/env python3
"""Fine-tune an SSL encoder cut to its first N transformer layers, then benchmark it.

The encoder's depth is set to ``--considered_layers`` in its configuration before
the weights load (``ssl_ctc.encoder.SSLEncoder``), so the removed layers cost neither
memory nor time, and checkpoints restore into the truncated shapes. The Brain is
``ssl_ctc.layer_removal.LayerRemovalBrain``; the sweep over N is ``layer_removal.sh``.

Usage::

    python layer_removal.py hparams/layer_removal.yaml --data_folder /path/to/LibriSpeech \
        --considered_layers 18

Authors
 * Recipe team 2026
"""

from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.layer_removal import LayerRemovalBrain
from ssl_ctc.recipe import main

if __name__ == "__main__":
    main(LayerRemovalBrain, benchmark_experiment)
