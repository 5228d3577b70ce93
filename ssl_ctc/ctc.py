"""CTC outputs: the character alphabet, the tokenizer, the one greedy decoder, frame upsampling.

Usage::

    tokenizer = make_tokenizer()
    words = greedy_decode(log_probs, lengths, tokenizer)
"""

import math
import re
import string

import torch  # noqa: F401  (the doctests use it)
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders import ctc_greedy_decode

from ssl_ctc.errors import ConfigurationError

# 26 letters, the apostrophe and the word separator: LibriSpeech's characters.
SPECIAL_LABEL_PATTERN = re.compile(r"^<[^<>]+>$")  # <blank>, <bos>, <eos>, <unk>
ALPHABET = list(string.ascii_uppercase) + ["'", " "]


def make_tokenizer():
    """Build the character encoder: blank, bos, eos, then LibriSpeech's 28 characters.

    Returns
    -------
    speechbrain.dataio.encoder.CTCTextEncoder
        31 labels, ``<blank>`` at index 0 (the paper's output size).

    Example
    -------
    >>> tokenizer = make_tokenizer()
    >>> len(tokenizer), tokenizer.lab2ind["<blank>"], tokenizer.encode_sequence(list("HI"))
    (31, 0, [10, 11])
    """
    tokenizer = CTCTextEncoder()
    tokenizer.insert_blank(index=0)
    tokenizer.insert_bos_eos(bos_label="<bos>", eos_label="<eos>", bos_index=1, eos_index=2)
    tokenizer.update_from_iterable(ALPHABET, sequence_input=False)
    tokenizer.expect_len(len(ALPHABET) + 3)
    return tokenizer


def special_label_indices(tokenizer):
    """Indices of bracketed labels other than blank (``<bos>``, ``<eos>``): never in a transcript.

    Example
    -------
    >>> special_label_indices(make_tokenizer())
    [1, 2]
    """
    return [index for index, label in sorted(tokenizer.ind2lab.items())
            if SPECIAL_LABEL_PATTERN.match(label) and label != tokenizer.blank_label]


def greedy_decode(log_probs, lengths, tokenizer):
    """Best-path CTC decoding of a batch into lists of words (``<bos>``/``<eos>`` never emitted).

    Arguments
    ---------
    log_probs : torch.Tensor
        [batch, frames, labels] CTC log-probabilities.
    lengths : torch.Tensor
        True number of frames of each utterance.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
        Character encoder with a blank label; " " separates words.

    Returns
    -------
    list of list of str

    Example
    -------
    >>> tokenizer = make_tokenizer()
    >>> labels = ["H", "H", "<blank>", "I", " ", "Y", "Y"]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([frames]), len(tokenizer)).float()
    >>> greedy_decode(log_probs.log(), torch.tensor([len(frames)]), tokenizer)
    [['HI', 'Y']]
    >>> greedy_decode(log_probs.log(), torch.tensor([3]), tokenizer)
    [['H']]
    >>> frames[2] = tokenizer.lab2ind["<eos>"]  # never emitted: the best other label is
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([frames]), len(tokenizer)) + 1e-3
    >>> greedy_decode(log_probs.log(), torch.tensor([len(frames)]), tokenizer)
    [['HI', 'Y']]
    """
    never_emitted = special_label_indices(tokenizer)
    if never_emitted:
        log_probs = log_probs.clone()
        log_probs[..., never_emitted] = -math.inf
    relative_lengths = lengths.float() / log_probs.shape[1]
    sequences = ctc_greedy_decode(log_probs, relative_lengths, blank_id=tokenizer.get_blank_index())
    return ["".join(characters).split() for characters in tokenizer.decode_ndim(sequences)]


def ctc_output_size(output_neurons, upsampling_factor):
    """Width of the CTC linear layer: ``upsampling_factor`` frames of ``output_neurons``.

    Arguments
    ---------
    output_neurons : int
        Vocabulary size including blank (31 for LibriSpeech characters).
    upsampling_factor : int
        CTC frames emitted per encoder frame (1 = no upsampling).

    Returns
    -------
    int
        ``output_neurons * upsampling_factor``.

    Example
    -------
    >>> ctc_output_size(31, 2)
    62
    >>> ctc_output_size(31, 0)
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: ctc_upsampling_factor must be an integer >= 1, got 0
    """
    if isinstance(upsampling_factor, bool) or not isinstance(upsampling_factor, int) or (
        upsampling_factor < 1
    ):
        raise ConfigurationError(
            f"ctc_upsampling_factor must be an integer >= 1, got {upsampling_factor!r}"
        )
    return output_neurons * upsampling_factor


def upsample_ctc_frames(logits, upsampling_factor):
    """Reshape [B, T, k*V] logits into [B, k*T, V] (k CTC frames per encoder frame).

    Arguments
    ---------
    logits : torch.Tensor
        Output of the CTC linear layer, last dimension ``k * V``.
    upsampling_factor : int
        ``k``.

    Returns
    -------
    torch.Tensor
        Logits with ``k`` times more frames.

    Example
    -------
    >>> upsample_ctc_frames(torch.zeros(2, 5, 62), 2).shape
    torch.Size([2, 10, 31])
    """
    batch, frames, values = logits.shape
    return logits.reshape(batch, frames * upsampling_factor, values // upsampling_factor)
