"""Synthetic utterances with LibriSpeech-like durations, for timing (not for recognition).

Usage::

    dataset = write_corpus(folder, librispeech_like_durations(8, 2.0, 20.0), seed=0)
"""

import math
import statistics

import soundfile
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from ssl_ctc.benchmarking.settings import PAPER_TEST_BATCH_SIZE as BATCH_SIZE
from ssl_ctc.data import read_waveform
from ssl_ctc.encoder import SAMPLE_RATE

# LibriSpeech test-clean durations, roughly: log-normal with median 6 s (mean 7.4 s,
# the paper's ~29.7 s per batch of 4).
DURATION_MEDIAN_S = 6.0


DURATION_SIGMA = 0.65


def librispeech_like_durations(count, min_seconds, max_seconds, scale=1.0):
    """Durations of a length-sorted, LibriSpeech-like test set in batches of 4, deterministically.

    One evenly spaced quantile of a log-normal distribution (median 6 s, mean
    7.4 s) per batch, times ``scale``; within a batch each utterance is 2 %
    longer than the one before, like neighbours in a sorted test set (so
    padding stays small, as in the five tests on LibriSpeech); all clipped to
    ``[min_seconds, max_seconds]``. Ascending.

    Arguments
    ---------
    count : int
        Number of utterances.
    min_seconds : float
        Shortest duration.
    max_seconds : float
        Longest duration.
    scale : float
        Shrinks (or stretches) every duration first (``--quick``: 0.2).

    Returns
    -------
    list of float
        Durations in seconds, rounded to 10 ms.

    Example
    -------
    >>> librispeech_like_durations(8, 2.0, 20.0)
    [3.64, 3.72, 3.79, 3.87, 8.74, 8.93, 9.12, 9.3]
    >>> librispeech_like_durations(5, 0.5, 2.0, scale=0.2)
    [0.73, 0.74, 0.76, 0.77, 1.75]
    """
    distribution = statistics.NormalDist(math.log(DURATION_MEDIAN_S * scale), DURATION_SIGMA)
    batches = math.ceil(count / BATCH_SIZE)
    durations = []
    for index in range(count):
        batch, position = divmod(index, BATCH_SIZE)
        longest = math.exp(distribution.inv_cdf((batch + 0.5) / batches))
        value = longest * (1 - 0.02 * (BATCH_SIZE - 1 - position))
        durations.append(round(min(max(value, min_seconds), max_seconds), 2))
    return durations


def write_corpus(folder, durations, seed):
    """Write synthetic utterances as 16-bit FLAC files and a LibriSpeech-style CSV.

    Arguments
    ---------
    folder : Path
        Where the files go.
    durations : list of float
        Seconds of each utterance.
    seed : int
        Seed of the signals.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Items "id", "sig" (read by the recipe's ``read_waveform``), "wrd", "duration".
    """
    generator = torch.Generator().manual_seed(seed)
    lines = ["ID,duration,wav,spk_id,wrd"]
    for index, duration in enumerate(durations):
        samples = int(duration * SAMPLE_RATE)
        time_axis = torch.arange(samples) / SAMPLE_RATE
        signal = 0.3 * torch.sin(2 * math.pi * (150 + 20 * index) * time_axis)
        signal += 0.05 * torch.randn(samples, generator=generator)
        path = folder / f"utterance{index}.flac"
        soundfile.write(path, signal.numpy(), SAMPLE_RATE, subtype="PCM_16")
        words = " ".join(["SPEED", "TEST"] * max(1, round(1.3 * duration)))
        lines.append(f"utterance{index},{duration},{path},0,{words}")
    csv_path = folder / "synthetic.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = DynamicItemDataset.from_csv(csv_path=str(csv_path))
    dataset.add_dynamic_item(read_waveform, takes="wav", provides="sig")
    dataset.set_output_keys(["id", "sig", "wrd", "duration"])
    return dataset


def padding_fraction(wav_lens):
    """Share of a padded batch that is padding.

    Arguments
    ---------
    wav_lens : torch.Tensor
        Relative lengths (1.0 for the longest utterance).

    Returns
    -------
    float

    Example
    -------
    >>> padding_fraction(torch.tensor([1.0, 0.5, 0.5, 1.0]))
    0.25
    """
    return 1.0 - float(wav_lens.mean())
