"""Turn a LibriSpeech-layout corpus into SpeechBrain CSV manifests.

Each split folder ``<data_folder>/<split>/<spk>/<chapter>/`` holds
``<spk>-<chapter>-<utt>.flac`` files and one ``<spk>-<chapter>.trans.txt``
transcript per chapter. Every split becomes ``<save_folder>/<split>.csv`` with
the columns ``ID,duration,wav,spk_id,wrd`` (``wav`` written as
``$data_root/...`` so the manifests survive moving the corpus), and the
training splits are also merged into one CSV. A second call with the same
options skips the work.

Usage::

    python librispeech_prepare.py /path/to/LibriSpeech results/prep \
        --train train-clean-100 --dev dev-clean --test test-clean test-other

Authors
 * Recipe team 2026
"""

import argparse
import csv
import json
import logging
import os
import shutil
from pathlib import Path

import soundfile

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["ID", "duration", "wav", "spk_id", "wrd"]
EXPECTED_SAMPLE_RATE = 16000
OPTIONS_FILE = "prepare_options.json"


class DataPreparationError(ValueError):
    """Raised when the corpus does not have the LibriSpeech layout or content."""


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=(),
    dev_splits=(),
    te_splits=(),
    merge_lst=(),
    merge_name="train.csv",
    skip_prep=False,
):
    """Write one CSV per split (and a merged training CSV) for a LibriSpeech tree.

    Arguments
    ---------
    data_folder : str
        Folder holding the split folders (e.g. ``/data/LibriSpeech``).
    save_folder : str
        Where the CSV files and the options record are written.
    tr_splits, dev_splits, te_splits : sequence of str
        Split folder names, e.g. ``["train-clean-100"]``.
    merge_lst : sequence of str
        Splits concatenated into ``merge_name`` (usually the training splits).
    merge_name : str
        File name of the merged CSV inside ``save_folder``.
    skip_prep : bool
        If True, do nothing (the CSVs are provided by the user).

    Returns
    -------
    dict
        Split name (and ``merge_name``) -> CSV path.

    Example
    -------
    >>> import tempfile
    >>> prepare_librispeech(tempfile.mkdtemp(), tempfile.mkdtemp(), ["x"])
    Traceback (most recent call last):
    ...
    librispeech_prepare.DataPreparationError: split folder 'x' not found ...
    """
    splits = list(tr_splits) + list(dev_splits) + list(te_splits)
    csv_paths = {split: os.path.join(save_folder, f"{split}.csv") for split in splits}
    if merge_lst:
        csv_paths[merge_name] = os.path.join(save_folder, merge_name)
    if skip_prep:
        return csv_paths

    check_layout(data_folder, splits)
    options = {
        "data_folder": os.path.abspath(data_folder),
        "splits": splits,
        "merge_lst": list(merge_lst),
        "merge_name": merge_name,
    }
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    if _already_prepared(options_path, options, csv_paths.values()):
        logger.info("Data preparation already done with the same options: skipping.")
        return csv_paths

    # Every split is read and checked before any CSV is (re)written: a broken
    # corpus leaves the manifests of an earlier preparation as they were.
    rows_per_split = {split: read_split(data_folder, split) for split in splits}
    os.makedirs(save_folder, exist_ok=True)
    for split in splits:
        write_csv(csv_paths[split], rows_per_split[split])
        logger.info(f"Wrote {len(rows_per_split[split])} utterances to {csv_paths[split]}")
    if merge_lst:
        merged = [row for split in merge_lst for row in rows_per_split[split]]
        write_csv(csv_paths[merge_name], merged)
    _write_json_atomically(options_path, options)
    return csv_paths


def check_layout(data_folder, splits):
    """Raise a clear error when the data folder or a split folder is missing.

    Arguments
    ---------
    data_folder : str
        Root of the corpus.
    splits : sequence of str
        Split folders that must exist below ``data_folder``.

    Example
    -------
    >>> check_layout("/nonexistent/LibriSpeech", ["dev-clean"])
    Traceback (most recent call last):
    ...
    librispeech_prepare.DataPreparationError: data_folder '/nonexistent/LibriSpeech' ...
    """
    if not data_folder or not os.path.isdir(data_folder):
        raise DataPreparationError(
            f"data_folder '{data_folder}' does not exist (give --data_folder "
            "pointing at the folder that holds train-clean-100, dev-clean, ...)"
        )
    for split in splits:
        if not os.path.isdir(os.path.join(data_folder, split)):
            found = sorted(
                name
                for name in os.listdir(data_folder)
                if os.path.isdir(os.path.join(data_folder, name))
            )
            raise DataPreparationError(
                f"split folder '{split}' not found in data_folder '{data_folder}' "
                f"(found: {', '.join(found) or 'no folders'})"
            )


def read_split(data_folder, split):
    """Pair every transcript line of a split with its audio file.

    Arguments
    ---------
    data_folder : str
        Root of the corpus.
    split : str
        Split folder name.

    Returns
    -------
    list of dict
        One row per utterance with the CSV columns, sorted by ID.
    """
    split_folder = os.path.join(data_folder, split)
    transcripts = {}
    audio_files = {}
    for folder, _, files in os.walk(split_folder):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".trans.txt"):
                transcripts.update(_read_transcript(path))
            elif name.endswith(".flac"):
                audio_files[name[: -len(".flac")]] = path
    if not transcripts:
        raise DataPreparationError(f"no *.trans.txt transcript found under '{split_folder}'")
    without_audio = sorted(set(transcripts) - set(audio_files))
    if without_audio:
        raise DataPreparationError(
            f"{len(without_audio)} transcript line(s) in '{split_folder}' have no audio file, "
            f"e.g. '{without_audio[0]}.flac' is missing"
        )
    without_transcript = sorted(set(audio_files) - set(transcripts))
    if without_transcript:
        raise DataPreparationError(
            f"{len(without_transcript)} audio file(s) in '{split_folder}' have no transcript line, "
            f"e.g. '{audio_files[without_transcript[0]]}'"
        )
    return [
        {
            "ID": utt_id,
            "duration": f"{audio_duration(audio_files[utt_id]):.4f}",
            "wav": "$data_root/" + os.path.relpath(audio_files[utt_id], data_folder),
            "spk_id": utt_id.split("-")[0],
            "wrd": transcripts[utt_id],
        }
        for utt_id in sorted(transcripts)
    ]


def audio_duration(path):
    """Return the duration in seconds of a 16 kHz audio file, or raise naming the file.

    Arguments
    ---------
    path : str
        Audio file readable by soundfile.

    Returns
    -------
    float
        Duration in seconds.
    """
    try:
        info = soundfile.info(path)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise DataPreparationError(f"unreadable audio file '{path}': {error}") from error
    if info.frames == 0:
        raise DataPreparationError(f"empty audio file '{path}' (0 samples)")
    if info.samplerate != EXPECTED_SAMPLE_RATE:
        raise DataPreparationError(
            f"audio file '{path}' is sampled at {info.samplerate} Hz; LibriSpeech and the "
            f"SSL encoders expect {EXPECTED_SAMPLE_RATE} Hz (resample the corpus first, "
            f"e.g. sox in.flac -r {EXPECTED_SAMPLE_RATE} out.flac)"
        )
    return info.frames / info.samplerate


def write_csv(path, rows):
    """Write manifest rows to ``path`` atomically (temporary file, then rename).

    Arguments
    ---------
    path : str
        Destination CSV.
    rows : list of dict
        Rows with the keys of ``CSV_COLUMNS``.
    """
    temporary = path + ".tmp"
    with open(temporary, "w", newline="", encoding="utf-8") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def copy_first_utterances(data_folder, target, counts):
    """Copy the first utterances of some splits of a LibriSpeech tree, in the same layout.

    For small runs that must finish in seconds (tests, ``tools/gpu_check.py``):
    chapters are taken in sorted order, and from each its first transcript lines
    and their FLAC files, until ``counts[split]`` utterances are copied.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding the split folders.
    target : str or Path
        Where the copy goes (created).
    counts : dict
        Split name -> number of utterances.

    Returns
    -------
    Path
        ``target``.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     chapter = Path(folder, "source", "test-clean", "1", "2")
    ...     chapter.mkdir(parents=True)
    ...     _ = (chapter / "1-2.trans.txt").write_text("1-2-0000 A\\n1-2-0001 B\\n")
    ...     for name in ("1-2-0000", "1-2-0001"):
    ...         _ = (chapter / f"{name}.flac").write_bytes(b"")
    ...     copy = copy_first_utterances(Path(folder, "source"), Path(folder, "copy"),
    ...                                  {"test-clean": 1})
    ...     sorted(path.name for path in (copy / "test-clean" / "1" / "2").iterdir())
    ['1-2-0000.flac', '1-2.trans.txt']
    """
    data_folder, target = Path(data_folder), Path(target)
    for split, count in counts.items():
        for transcript in sorted((data_folder / split).rglob("*.trans.txt")):
            kept = [line for line in transcript.read_text(encoding="utf-8").splitlines()
                    if line.strip()][:count]
            count -= len(kept)
            chapter = target / transcript.parent.relative_to(data_folder)
            chapter.mkdir(parents=True)
            (chapter / transcript.name).write_text("\n".join(kept) + "\n", encoding="utf-8")
            for line in kept:
                name = line.split(" ", 1)[0] + ".flac"
                shutil.copy(transcript.parent / name, chapter / name)
            if count == 0:
                break
    return target


def _read_transcript(path):
    transcripts = {}
    with open(path, encoding="utf-8") as transcript_file:
        for line_number, line in enumerate(transcript_file, start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not text.strip():
                raise DataPreparationError(
                    f"line {line_number} of '{path}' has no text after the utterance id"
                )
            transcripts[utt_id] = " ".join(text.upper().split())
    return transcripts


def _already_prepared(options_path, options, csv_paths):
    if not os.path.isfile(options_path) or not all(os.path.isfile(p) for p in csv_paths):
        return False
    with open(options_path, encoding="utf-8") as options_file:
        return json.load(options_file) == options


def _write_json_atomically(path, content):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as json_file:
        json.dump(content, json_file, indent=2)
    os.replace(temporary, path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_folder", help="folder holding the LibriSpeech split folders")
    parser.add_argument("save_folder", help="where the CSV files are written")
    parser.add_argument("--train", nargs="*", default=["train-clean-100"])
    parser.add_argument("--dev", nargs="*", default=["dev-clean"])
    parser.add_argument("--test", nargs="*", default=["test-clean", "test-other"])
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    prepare_librispeech(
        arguments.data_folder,
        arguments.save_folder,
        tr_splits=arguments.train,
        dev_splits=arguments.dev,
        te_splits=arguments.test,
        merge_lst=arguments.train,
    )
