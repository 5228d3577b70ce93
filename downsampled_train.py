#!/usr/bin/env python3
"""Fine-tune an SSL encoder for CTC ASR on downsampled input, then benchmark it.

The waveform goes through a downsampler (signal resampling, averaging window or
learned strided convolution, factor 1-4) before the SSL encoder, so the encoder
runs on k times fewer frames. Everything else lives in ``ssl_ctc.py``.

Usage::

    python downsampled_train.py hparams/sig_down8000.yaml --data_folder /path/to/LibriSpeech
    python downsampled_train.py hparams/sig_down8000.yaml --data_folder /path/to/LibriSpeech \
        --downsampling_technique convolutional --downsampling_factor 3

Authors
 * Recipe team 2026
"""

from ssl_ctc import SSLCTCBrain, run_recipe


class DownsampledBrain(SSLCTCBrain):
    """The core Brain as it is: the downsampler runs in ``SSLCTCBrain.encode``."""


if __name__ == "__main__":
    run_recipe(DownsampledBrain)
