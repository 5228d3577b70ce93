"""Helpers shared by the seed-encoder pre-training and probe scripts (plain PyTorch CTC).

They read the synthetic corpus written by tools/embedded/make_synthetic_corpus.py into memory,
batch it by duration, resample whole batches, and score greedy CTC output. Characters and greedy
decoding are the recipe's own (``ssl_ctc.ctc.make_tokenizer`` and ``greedy_decode``: blank 0,
bos 1, eos 2, then the 28 characters), so the throw-away heads use the recipe's label indices.
Not a SpeechBrain recipe: these scripts only make and check the shipped stand-in encoder.

Usage: imported by tools/embedded/pretrain_seed_encoder.py and tools/embedded/probe_seed_encoder.py.
"""

import csv
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from speechbrain.utils.metric_stats import ErrorRateStats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the recipe's ssl_ctc package
from ssl_ctc.ctc import greedy_decode, make_tokenizer  # noqa: E402

SAMPLE_RATE = 16000
TOKENIZER = make_tokenizer()
N_OUTPUTS = len(TOKENIZER)  # 31: blank, bos, eos (never targets) and the 28 characters


@dataclass
class Utterance:
    """One utterance held in memory.

    Attributes
    ----------
    utt_id : str
        The utterance id.
    audio : torch.Tensor
        The 16 kHz waveform as int16, shape ``(samples,)``.
    text : str
        The upper-case transcript.
    """

    utt_id: str
    audio: torch.Tensor
    text: str


def read_flac(path):
    """Read a 16 kHz mono FLAC file as an int16 tensor."""
    audio, rate = soundfile.read(str(path), dtype="int16")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    return torch.from_numpy(audio)


def read_librispeech_split(split_dir):
    """Read every utterance of a LibriSpeech-layout split.

    Parameters
    ----------
    split_dir : pathlib.Path
        E.g. ``embedded/LibriSpeech/test-clean``.

    Returns
    -------
    list of Utterance
        The split's utterances, sorted by id.
    """
    utterances = []
    for trans in sorted(Path(split_dir).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt_id, text = line.split(" ", 1)
            audio = read_flac(trans.parent / f"{utt_id}.flac")
            utterances.append(Utterance(utt_id, audio, text))
    return utterances


def read_pretrain_set(pretrain_dir):
    """Read the pre-training set listed in ``manifest.tsv``.

    Parameters
    ----------
    pretrain_dir : pathlib.Path
        The folder written by tools/embedded/make_synthetic_corpus.py.

    Returns
    -------
    list of Utterance
        The pre-training utterances.
    """
    with open(Path(pretrain_dir) / "manifest.tsv", newline="") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    return [Utterance(Path(row["path"]).stem, read_flac(Path(pretrain_dir) / row["path"]),
                      row["text"]) for row in rows]


def encode_text(text):
    """Map a transcript to the recipe tokenizer's label indices."""
    return TOKENIZER.encode_sequence(list(text))


def make_batches(utterances, max_samples, rng):
    """Group utterances of similar length into batches, in a random order.

    Lengths are jittered by up to 10 % before sorting so that batches differ between epochs.

    Parameters
    ----------
    utterances : list of Utterance
        The utterances.
    max_samples : int
        Upper bound on ``batch size x longest utterance`` (16 kHz samples).
    rng : random.Random
        The random generator.

    Returns
    -------
    list of list of Utterance
        The batches.
    """
    order = sorted(utterances, key=lambda u: len(u.audio) * rng.uniform(0.9, 1.1))
    batches, batch, longest = [], [], 0
    for utt in order:
        longest_if_added = max(longest, len(utt.audio))
        if batch and longest_if_added * (len(batch) + 1) > max_samples:
            batches.append(batch)
            batch, longest_if_added = [], len(utt.audio)
        batch.append(utt)
        longest = longest_if_added
    batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(batch, factor=1, normalize=True):
    """Resample, normalise and pad a batch.

    With ``normalize``, each waveform is scaled to zero mean and unit variance over its own
    samples (what ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does) before zero-padding;
    without, it stays in [-1, 1] (SpeechBrain's wrapper normalises itself).

    Parameters
    ----------
    batch : list of Utterance
        The utterances.
    factor : int
        Downsampling factor: the 16 kHz audio is resampled to ``16000 / factor`` Hz and fed
        as-is, i.e. as shorter signals.
    normalize : bool
        Normalise each waveform.

    Returns
    -------
    wav : torch.Tensor
        ``(batch, samples)`` float32.
    lengths : torch.Tensor
        Samples per utterance (int64).
    targets : torch.Tensor
        Concatenated label indices.
    target_lengths : torch.Tensor
        Labels per utterance.
    """
    signals = []
    for utt in batch:
        wav = utt.audio.float() / 32768.0
        if factor != 1:
            wav = torchaudio.functional.resample(wav, factor, 1)
        if normalize:
            wav = (wav - wav.mean()) / torch.sqrt(wav.var() + 1e-7)
        signals.append(wav)
    lengths = torch.tensor([len(s) for s in signals])
    wav = torch.nn.utils.rnn.pad_sequence(signals, batch_first=True)
    labels = [encode_text(utt.text) for utt in batch]
    targets = torch.tensor([i for label in labels for i in label])
    target_lengths = torch.tensor([len(label) for label in labels])
    return wav, lengths, targets, target_lengths


def padding_mask(wav, lengths):
    """Return the ``(batch, samples)`` attention mask, 1 on real samples."""
    return (torch.arange(wav.shape[1])[None, :] < lengths[:, None]).long()


def decode_texts(log_probs, lengths):
    """Greedy CTC decoding with the recipe's decoder, as space-joined texts.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(batch, frames, N_OUTPUTS)`` log-probabilities.
    lengths : torch.Tensor
        Valid frames per utterance.

    Returns
    -------
    list of str
        The decoded texts (words joined by single spaces).
    """
    return [" ".join(words) for words in greedy_decode(log_probs, lengths, TOKENIZER)]


class ErrorRates:
    """Accumulate character and word error rates with SpeechBrain's ``ErrorRateStats``."""

    def __init__(self):
        self.cer = ErrorRateStats()
        self.wer = ErrorRateStats()

    def append(self, ids, hypotheses, references):
        """Add a batch of decoded texts and their references."""
        self.cer.append(ids, [list(h) for h in hypotheses], [list(r) for r in references])
        self.wer.append(ids, [h.split() for h in hypotheses], [r.split() for r in references])

    def summarize(self):
        """Return ``{"CER": %, "WER": %}``."""
        return {"CER": self.cer.summarize("error_rate"), "WER": self.wer.summarize("error_rate")}


def seed_everything(seed):
    """Seed Python, NumPy and PyTorch generators; return a ``random.Random`` for batching."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return random.Random(seed)
