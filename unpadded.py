"""CPU inference one utterance at a time, each at its own length: no padding, no attention mask.

On a GPU, batching pays for its padding. On a CPU it does not: a transformer
layer's products over one utterance's frames are already large enough for the
cores, and a padded batch costs the padded frames plus the attention mask. The
mask costs more than it seems: the Hugging Face encoders add it to a
``[batch x heads, T, T]`` bias in every layer (WavLM's relative position bias),
which made a masked WavLM-Large forward 2 to 9 % slower than an unmasked one
on 2 cores in our runs. So at inference on CPU the encoders run each utterance of a
padded batch alone and pad the outputs back to the batch's shape; the results
are those of each utterance alone, which a padded batch only approximates.

Usage::

    from unpadded import pad_frames, runs_unpadded, split_utterances

    if runs_unpadded(wavs, wav_lens):
        outputs = [encoder(wav) for wav in split_utterances(wavs, wav_lens)]
        features = pad_frames(outputs, num_frames)

Authors
 * Recipe team 2026
"""

import torch
import torch.nn.functional as F


def sample_lengths(wavs, wav_lens):
    """Each utterance's number of samples, from SpeechBrain's relative lengths.

    Example
    -------
    >>> sample_lengths(torch.zeros(2, 100), torch.tensor([1.0, 0.555]))
    tensor([100,  56])
    """
    return torch.round(wav_lens * wavs.shape[1]).long()


def runs_unpadded(wavs, wav_lens):
    """Whether a batch is worth splitting: on CPU, with at least one padded utterance.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[B, samples]``.
    wav_lens : torch.Tensor or None
        Relative lengths; None means no padding.

    Returns
    -------
    bool

    Example
    -------
    >>> runs_unpadded(torch.zeros(2, 100), torch.tensor([1.0, 0.5]))
    True
    >>> runs_unpadded(torch.zeros(2, 100), torch.tensor([1.0, 1.0]))
    False
    """
    if wav_lens is None or wavs.device.type != "cpu" or len(wavs) < 2:
        return False
    return bool((sample_lengths(wavs, wav_lens) < wavs.shape[1]).any())


def split_utterances(wavs, wav_lens):
    """The batch's utterances without their padding, each ``[1, samples]``.

    Example
    -------
    >>> [wav.shape[1] for wav in split_utterances(torch.zeros(2, 100), torch.tensor([1.0, 0.5]))]
    [100, 50]
    """
    return [wavs[index : index + 1, :length]
            for index, length in enumerate(sample_lengths(wavs, wav_lens).tolist())]


def pad_frames(outputs, num_frames):
    """Stack ``[1, T_i, ...]`` outputs into ``[B, num_frames, ...]``, zero-padded in time.

    Example
    -------
    >>> pad_frames([torch.ones(1, 3, 2), torch.ones(1, 1, 2)], 4)[:, :, 0]
    tensor([[1., 1., 1., 0.],
            [1., 0., 0., 0.]])
    """
    return torch.cat([
        F.pad(output, (0, 0) * (output.dim() - 2) + (0, num_frames - output.shape[1]))
        for output in outputs
    ])
