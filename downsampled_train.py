#!/usr/bin/env python3
"""Fine-tune an SSL encoder for CTC ASR on downsampled input, then benchmark it.

The waveform goes through a downsampler (signal resampling, averaging window or
learned strided convolution, factor 1-4) before the SSL encoder, so the encoder
runs on k times fewer frames; for factors 3 and 4 the CTC layer emits 2 frames
per encoder frame. The Brain is ``ssl_ctc.downsampling.DownsampledBrain``; the
downsamplers are built from the YAML's ``downsampling_techniques``.

Usage::

    python downsampled_train.py hparams/downsampling.yaml --data_folder /path/to/LibriSpeech
    python downsampled_train.py hparams/downsampling.yaml --data_folder /path/to/LibriSpeech \
        --downsampling_technique convolutional --downsampling_factor 3

Authors
 * Recipe team 2026
"""

from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.recipe import main

if __name__ == "__main__":
    main(DownsampledBrain, benchmark_experiment)
