"""Downsampling strategy: a downsampler before the SSL encoder, optional CTC output upsampling.

Usage::

    python downsampled_train.py hparams/sig_down8000.yaml --data_folder /path/to/LibriSpeech
"""

import torch

from ssl_ctc.brain import SSLCTCBrain
from ssl_ctc.ctc import upsample_ctc_frames
from ssl_ctc.encoder import encoder_frames
from ssl_ctc.errors import ConfigurationError

# Row names of the paper's table: SD2, AV3, CL4...
TECHNIQUE_ABBREVIATIONS = {"signal_downsampling": "SD", "averaging": "AV", "convolutional": "CL"}


def build_downsampler(techniques, technique, factor):
    """Pick and build the downsampler named on the command line.

    Arguments
    ---------
    techniques : dict
        Technique name -> partial constructor taking ``downsampling_factor``
        (the YAML ``downsampling_techniques``: classes of
        ``speechbrain.lobes.downsampling``).
    technique : str
        Key of ``techniques`` (the YAML ``downsampling_technique``).
    factor : int
        Downsampling factor; 1 means no downsampling (the baseline).

    Returns
    -------
    torch.nn.Module
        The downsampler, or ``torch.nn.Identity`` for factor 1.

    Example
    -------
    >>> from speechbrain.lobes.downsampling import PoolingDownsampler
    >>> from functools import partial
    >>> techniques = {"averaging": partial(PoolingDownsampler, kernel_size=21)}
    >>> build_downsampler(techniques, "averaging", 2)(torch.rand(1, 16000)).shape
    torch.Size([1, 7990])
    >>> build_downsampler(techniques, "resampling", 2)
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: unknown downsampling_technique 'resampling'; valid: averaging
    """
    if technique not in techniques:
        raise ConfigurationError(
            f"unknown downsampling_technique '{technique}'; valid: {', '.join(sorted(techniques))}"
        )
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigurationError(
            f"downsampling_factor must be an integer >= 1 (1 = no downsampling), got {factor!r}"
        )
    if factor == 1:
        return torch.nn.Identity()
    return techniques[technique](downsampling_factor=factor)


def paper_upsampling_factor(downsampling_factor):
    """CTC output upsampling the paper used: 2 for factors >= 3, none below.

    Arguments
    ---------
    downsampling_factor : int
        Input downsampling factor.

    Returns
    -------
    int
        Upsampling factor of the CTC output.

    Example
    -------
    >>> [paper_upsampling_factor(k) for k in (1, 2, 3, 4)]
    [1, 1, 2, 2]
    """
    return 2 if downsampling_factor >= 3 else 1


class DownsampledBrain(SSLCTCBrain):
    """The base Brain with a downsampler before the encoder and optional CTC upsampling.

    The YAML builds the downsampler (``downsampling_techniques``: a technique name ->
    class); this Brain runs it before the SSL encoder, emits
    ``ctc_upsampling_factor`` CTC frames per encoder frame, and names the row of the
    paper's table (``SD2``, ``AV3``, ``CL4``; ``No downsampling`` for factor 1). A
    new technique is a class in the YAML plus its abbreviation here.
    """

    technique_abbreviations = TECHNIQUE_ABBREVIATIONS

    def encode(self, wavs, wav_lens):
        """Downsample, then run the SSL encoder (relative lengths are unchanged)."""
        return super().encode(self.modules.downsampler(wavs), wav_lens)

    def ctc_logits(self, features):
        """The head's logits, ``ctc_upsampling_factor`` frames per encoder frame."""
        return upsample_ctc_frames(super().ctc_logits(features), self.hparams.ctc_upsampling_factor)

    def ctc_frames(self, num_samples):
        """CTC frames of ``num_samples`` input samples after downsampling and upsampling."""
        factor = self.hparams.downsampling_factor
        upsampling = self.hparams.ctc_upsampling_factor
        return encoder_frames(self.hparams.ssl, num_samples // factor) * upsampling

    def experiment_tags(self):
        """The base tags with the technique and factor: ``SD2``, or ``No downsampling``."""
        tags = super().experiment_tags()
        factor = self.hparams.downsampling_factor
        if factor == 1:
            return {**tags, "name": "No downsampling"}
        technique = self.hparams.downsampling_technique
        abbreviation = self.technique_abbreviations.get(technique, technique)
        return {
            **tags,
            "name": f"{abbreviation}{factor}",
            "strategy": technique,
            "technique": technique,
            "factor": factor,
            "ctc_upsampling_factor": self.hparams.ctc_upsampling_factor,
            "label": f"x{factor}",
            "baseline": False,
        }
