"""Downsampling strategy: a downsampler before the SSL encoder, optional CTC output upsampling.

Usage::

    python downsampled_train.py hparams/sig_down8000.yaml --data_folder /path/to/LibriSpeech
"""

import torch
from speechbrain.lobes.downsampling import (
    Conv1DDownsampler,
    PoolingDownsampler,
    SignalDownsampler,
)

from ssl_ctc.brain import SSLCTCBrain
from ssl_ctc.ctc import upsample_ctc_frames
from ssl_ctc.encoder import encoder_frame_lengths, sample_lengths_of
from ssl_ctc.errors import ConfigurationError
from ssl_ctc.experiments.registry import TECHNIQUE_ABBREVIATIONS
from ssl_ctc.inference.hparams_yaml import partial_yaml


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
    downsampler = techniques[technique](downsampling_factor=factor)
    if isinstance(downsampler, Conv1DDownsampler):
        initialize_as_low_pass(downsampler)
    return downsampler


def initialize_as_low_pass(downsampler):
    """Start a learned strided convolution as an anti-aliasing low-pass filter of its stride.

    A random convolution makes the encoder start from noise; a Hann-windowed sinc
    with its cutoff at the new Nyquist frequency (unit gain at DC) starts it from
    what signal downsampling gives, and training adapts it from there.

    Arguments
    ---------
    downsampler : speechbrain.lobes.downsampling.Conv1DDownsampler
        Its convolution weights are set in place, the bias to zero.

    Example
    -------
    >>> from speechbrain.lobes.downsampling import Conv1DDownsampler
    >>> downsampler = initialize_as_low_pass(Conv1DDownsampler(3, 81))
    >>> tone = torch.sin(torch.arange(16000) * 2 * torch.pi * 200 / 16000)[None]
    >>> round(float(downsampler(tone).abs().max()), 2)  # 200 Hz passes at unit gain
    1.0
    """
    convolution = downsampler.downsampler.conv
    kernel_size = convolution.kernel_size[0]
    cutoff = 1.0 / downsampler.downsampling_factor  # of the input's Nyquist frequency
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    taps = torch.sinc(cutoff * offsets) * torch.hann_window(kernel_size, periodic=False,
                                                            dtype=torch.float64)
    with torch.no_grad():
        convolution.weight.copy_((taps / taps.sum()).view_as(convolution.weight))
        if convolution.bias is not None:
            convolution.bias.zero_()
    return downsampler


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


def downsampled_lengths(downsampler, sample_lengths):
    """Valid output samples of a downsampler for inputs of ``sample_lengths`` valid samples.

    Output sample i of SpeechBrain's downsamplers depends on input samples near
    ``i * factor`` only, and a padded batch is zero-padded, so the first
    ``downsampled_lengths`` outputs of an utterance are the same alone and in any
    batch. Known classes use their length formula; another module is run on zeros.

    Arguments
    ---------
    downsampler : torch.nn.Module
        ``torch.nn.Identity`` or a ``speechbrain.lobes.downsampling`` downsampler.
    sample_lengths : torch.Tensor
        ``[B]`` valid input samples.

    Returns
    -------
    torch.Tensor
        ``[B]`` LongTensor.

    Example
    -------
    >>> from speechbrain.lobes.downsampling import PoolingDownsampler, SignalDownsampler
    >>> lengths = torch.tensor([16000, 7999])
    >>> downsampled_lengths(SignalDownsampler(2, 16000), lengths)
    tensor([8000, 4000])
    >>> downsampled_lengths(PoolingDownsampler(3, 21), lengths)
    tensor([5327, 2660])
    """
    lengths = sample_lengths.long()
    if isinstance(downsampler, torch.nn.Identity):
        return lengths
    if isinstance(downsampler, SignalDownsampler):
        resample = downsampler.downsampler
        return -((-resample.new_freq * lengths) // resample.orig_freq)  # ceiling
    if isinstance(downsampler, Conv1DDownsampler):
        window = downsampler.kernel_size
        return ((lengths - window) // downsampler.downsampling_factor + 1).clamp(min=0)
    if isinstance(downsampler, PoolingDownsampler):
        window = downsampler.kernel_size - 2 * downsampler.padding
        return ((lengths - window) // downsampler.downsampling_factor + 1).clamp(min=0)
    with torch.no_grad():
        outputs = [downsampler(torch.zeros(1, int(length))).shape[-1] for length in lengths]
    return torch.tensor(outputs, device=sample_lengths.device)


class DownsampledBrain(SSLCTCBrain):
    """The base Brain with a downsampler before the encoder and optional CTC upsampling.

    The YAML builds the downsampler (``downsampling_techniques``: a technique name ->
    class); this Brain runs it before the SSL encoder, emits
    ``ctc_upsampling_factor`` CTC frames per encoder frame, and names the row of the
    paper's table (``SD2``, ``AV3``, ``CL4``; ``No downsampling`` for factor 1). A
    new technique is a class in the YAML plus its abbreviation in
    ``ssl_ctc.experiments.registry.TECHNIQUE_ABBREVIATIONS``.
    """

    technique_abbreviations = TECHNIQUE_ABBREVIATIONS

    def encode(self, wavs, wav_lens):
        """Downsample, then run the SSL encoder on each utterance's exact downsampled length."""
        downsampled = self.modules.downsampler(wavs)
        lengths = downsampled_lengths(self.hparams.downsampler, sample_lengths_of(wavs, wav_lens))
        return super().encode(downsampled, lengths.to(wavs.dtype) / downsampled.shape[1])

    def ctc_logits(self, features):
        """The head's logits, ``ctc_upsampling_factor`` frames per encoder frame."""
        return upsample_ctc_frames(super().ctc_logits(features), self.hparams.ctc_upsampling_factor)

    def ctc_frames(self, sample_lengths):
        """CTC frames of each utterance after downsampling and CTC upsampling (``[B]`` tensors)."""
        lengths = downsampled_lengths(self.hparams.downsampler, sample_lengths)
        frames = encoder_frame_lengths(self.hparams.ssl.model, lengths)
        return frames * self.hparams.ctc_upsampling_factor

    def frame_grid(self):
        """The encoder's grid times the downsampling factor; CTC frames split by the upsampling."""
        encoder_stride, _ = super().frame_grid()
        grid = encoder_stride * self.hparams.downsampling_factor
        return grid, grid / self.hparams.ctc_upsampling_factor

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

    def inference_keys(self):
        """The base keys and the downsampler's (``encode``, ``ctc_frames``)."""
        return (*super().inference_keys(), "downsampling_technique", "downsampling_factor",
                "ctc_upsampling_factor")

    def inference_modules_yaml(self):
        """The downsampler (from the ``downsampling_*`` keys), then the base head."""
        technique = self.hparams.downsampling_technique
        technique_class = self.hparams.downsampling_techniques[technique]
        return "".join(line + "\n" for line in [
            "downsampler: !apply:ssl_ctc.downsampling.build_downsampler",
            "    techniques:",
            f"        {technique}: {partial_yaml(technique_class, 12)}",
            "    technique: !ref <downsampling_technique>",
            "    factor: !ref <downsampling_factor>",
        ]) + super().inference_modules_yaml()

    def inference_card_lines(self):
        """The downsampling and CTC upsampling factors."""
        tags = self.experiment_tags()
        return [*super().inference_card_lines(),
                f"- downsampling factor {tags['factor']} (`{tags['technique']}`), "
                f"CTC upsampling factor {tags['ctc_upsampling_factor']}"]
