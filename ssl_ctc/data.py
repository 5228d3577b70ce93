"""Data: prepared CSV manifests to SpeechBrain datasets, with the checks on their content.

Usage::

    train_data, valid_data, test_datasets = dataio_prepare(hparams, csv_paths, tokenizer)
"""

import csv
import os

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from ssl_ctc.ctc import ALPHABET
from ssl_ctc.errors import ConfigurationError

MERGED_TRAIN_CSV = "train.csv"


# Manifest columns the recipe reads (librispeech_prepare also writes spk_id).
REQUIRED_CSV_COLUMNS = ("ID", "duration", "wav", "wrd")


def dataio_prepare(hparams, csv_paths, tokenizer):
    """Build the train, valid and test datasets from the prepared CSV files.

    Arguments
    ---------
    hparams : dict
        Loaded YAML (``data_folder``, ``dev_splits``, ``test_splits``, ``sorting``,
        dataloader options).
    csv_paths : dict
        Split name (and ``train.csv`` for the merged training splits) -> CSV path,
        as returned by ``prepare_librispeech``.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
        Character encoder (see ``make_tokenizer``).

    Returns
    -------
    tuple
        ``(train_data, valid_data, test_datasets)``, the last a dict split -> dataset.
    """
    data_folder = hparams["data_folder"]

    def load(csv_path):
        check_manifest_columns(csv_path)
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": data_folder}
        )

    train_data = load(csv_paths[MERGED_TRAIN_CSV])
    if hparams["sorting"] in ("ascending", "descending"):
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending"
        )
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif hparams["sorting"] != "random":
        raise ConfigurationError(
            f"sorting must be ascending, descending or random, got '{hparams['sorting']}'"
        )
    if len(hparams["dev_splits"]) != 1:
        raise ConfigurationError(
            f"dev_splits must name exactly one validation split, got {hparams['dev_splits']}"
        )
    valid_data = load(csv_paths[hparams["dev_splits"][0]]).filtered_sorted(sort_key="duration")
    test_datasets = {
        split: load(csv_paths[split]).filtered_sorted(sort_key="duration")
        for split in hparams["test_splits"]
    }
    datasets = [train_data, valid_data, *test_datasets.values()]
    check_characters(datasets)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_waveform(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "char_list", "tokens")
    def text_pipeline(wrd):
        yield wrd
        char_list = list(wrd)
        yield char_list
        yield torch.LongTensor(tokenizer.encode_sequence(char_list))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens", "duration"])
    return train_data, valid_data, test_datasets


def check_manifest_columns(csv_path):
    """Raise naming the file when a manifest is missing or lacks a column the recipe reads.

    Arguments
    ---------
    csv_path : str
        A split's CSV (written by ``prepare_librispeech``, or by hand with ``skip_prep: True``).

    Example
    -------
    >>> check_manifest_columns("/nonexistent/dev-clean.csv")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: CSV file '/nonexistent/dev-clean.csv' not found ...
    """
    if not os.path.isfile(csv_path):
        raise ConfigurationError(
            f"CSV file '{csv_path}' not found (with skip_prep: True, prepare_folder must hold "
            "one CSV per split and the merged train.csv)"
        )
    with open(csv_path, newline="", encoding="utf-8") as csv_file:
        header = next(csv.reader(csv_file), [])
    missing = [column for column in REQUIRED_CSV_COLUMNS if column not in header]
    if missing:
        raise ConfigurationError(
            f"CSV file '{csv_path}' has no column {', '.join(missing)} (its columns: "
            f"{', '.join(header) or 'none'}; needed: {', '.join(REQUIRED_CSV_COLUMNS)})"
        )


def read_waveform(path):
    """Read an audio file as a 1-D float tensor, naming the file when it fails.

    Arguments
    ---------
    path : str
        Audio file path.

    Returns
    -------
    torch.Tensor
        The waveform.
    """
    try:
        waveform = sb.dataio.dataio.read_audio(path)
    except Exception as error:
        raise RuntimeError(f"cannot read audio file '{path}': {error}") from error
    if waveform.numel() == 0:
        raise RuntimeError(f"audio file '{path}' is empty")
    return waveform


def check_characters(datasets):
    """Raise if a transcript holds a character outside LibriSpeech's alphabet."""
    allowed = set(ALPHABET)
    for dataset in datasets:
        with dataset.output_keys_as(["id", "wrd"]):
            for item in dataset:
                unknown = set(item["wrd"]) - allowed
                if unknown:
                    raise ConfigurationError(
                        f"utterance {item['id']} has characters outside A-Z, apostrophe and "
                        f"space: {''.join(sorted(unknown))!r}"
                    )


def count_ctc_shortfalls(dataset, ctc_frames, sample_rate):
    """Count utterances with more characters than CTC output frames.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Dataset with ``duration`` and ``wrd``.
    ctc_frames : callable
        ``[N]`` valid input samples -> ``[N]`` CTC output frames (the Brain's ``ctc_frames``).
    sample_rate : int
        Input sampling rate.

    Returns
    -------
    tuple
        ``(shortfalls, total)``.
    """
    with dataset.output_keys_as(["duration", "wrd"]):
        items = list(dataset)
    samples = torch.tensor([int(float(item["duration"]) * sample_rate) for item in items])
    characters = torch.tensor([len(item["wrd"]) for item in items])
    frames = ctc_frames(samples) if items else characters
    return int((characters > frames).sum()), len(items)


TEST_ITEM_KEYS = ["id", "sig", "wrd", "duration"]


def make_test_loader(dataset, batch_size):
    """Batches a test set in ascending duration, padded with PaddedBatch.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Items provide "id", "sig", "wrd" and "duration"; the dataset itself
        is left unchanged (the sorted copy has its own output keys).
    batch_size : int
        Utterances per batch.

    Returns
    -------
    torch.utils.data.DataLoader

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({
    ...     "long": {"sig": torch.zeros(300), "wrd": "B", "duration": 3.0},
    ...     "short": {"sig": torch.zeros(100), "wrd": "A", "duration": 1.0},
    ... })
    >>> [batch.id for batch in make_test_loader(dataset, batch_size=1)]
    [['short'], ['long']]
    """
    sorted_dataset = dataset.filtered_sorted(sort_key="duration")
    sorted_dataset.set_output_keys(TEST_ITEM_KEYS)
    return torch.utils.data.DataLoader(
        sorted_dataset, batch_size=batch_size, collate_fn=PaddedBatch
    )


def test_batches_from(loader, first):
    """The batches of a ``make_test_loader`` loader from batch index ``first`` on.

    The same batches as the loader's own (same boundaries), loaded without reading the
    ones before.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({
    ...     name: {"sig": torch.zeros(100 * seconds), "wrd": "A", "duration": float(seconds)}
    ...     for seconds, name in enumerate("abcde", start=1)})
    >>> loader = make_test_loader(dataset, batch_size=2)
    >>> [batch.id for batch in test_batches_from(loader, 1)]
    [['c', 'd'], ['e']]
    """
    start = min(first, len(loader)) * loader.batch_size
    rest = torch.utils.data.Subset(loader.dataset, range(start, len(loader.dataset)))
    return torch.utils.data.DataLoader(rest, batch_size=loader.batch_size,
                                       collate_fn=loader.collate_fn)


def longest_test_batches(loader, count):
    """The ``count`` last batches of a ``make_test_loader`` loader: its longest utterances.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({
    ...     name: {"sig": torch.zeros(100 * seconds), "wrd": "A", "duration": float(seconds)}
    ...     for seconds, name in enumerate("abcde", start=1)})
    >>> [batch.id for batch in longest_test_batches(make_test_loader(dataset, 2), 2)]
    [['c', 'd'], ['e']]
    """
    return test_batches_from(loader, max(len(loader) - count, 0))
