"""The embedded default keeps its test split out of what the seed encoder and the LM learned from.

Reads only shipped text files (transcripts, ``SPEAKERS.TXT``, the pre-training sentence list),
so it needs neither espeak-ng nor the pre-training audio.

Usage: python -m pytest tests/test_embedded_corpus.py
"""

import csv
import json
from pathlib import Path

import pytest

EMBEDDED = Path(__file__).resolve().parents[1] / "embedded"
LIBRISPEECH = EMBEDDED / "LibriSpeech"
PRETRAIN_LIST = EMBEDDED / "pretrain_sentences.tsv"
SPLITS = {"test-clean": (45, 4), "dev-clean": (45, 4), "train-clean-100": (260, 12)}


def transcripts(split):
    """Return ``{utterance id: text}`` of a LibriSpeech-layout split.

    Parameters
    ----------
    split : str
        The split folder name, e.g. ``test-clean``.

    Returns
    -------
    dict
        The transcripts.
    """
    texts = {}
    for trans in sorted((LIBRISPEECH / split).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt_id, text = line.split(" ", 1)
            texts[utt_id] = text
    return texts


def pretrain_rows():
    """Return the shipped pre-training list as dicts (``voice``, ``rate``, ``pitch``, ``text``)."""
    with open(PRETRAIN_LIST, newline="") as rows:
        return list(csv.DictReader(rows, delimiter="\t"))


def speaker_voices():
    """Return ``{split: set of espeak-ng voice/variant pairs}`` from ``SPEAKERS.TXT``."""
    voices = {}
    for line in (LIBRISPEECH / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        _, _, split, _, name = (field.strip() for field in line.split("|"))
        voices.setdefault(split, set()).add(name.split()[0])
    return voices


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_split_sizes(split):
    """Each split has its documented numbers of utterances and speakers, with audio."""
    texts = transcripts(split)
    n_utterances, n_speakers = SPLITS[split]
    assert len(texts) == n_utterances
    assert len({utt_id.split("-")[0] for utt_id in texts}) == n_speakers
    for utt_id in texts:
        speaker, chapter, _ = utt_id.split("-")
        assert (LIBRISPEECH / split / speaker / chapter / f"{utt_id}.flac").is_file()


@pytest.mark.parametrize("held_out", ["test-clean", "dev-clean"])
def test_held_out_sentences_are_in_no_training_text(held_out):
    """No dev or test sentence is in train-clean-100 or the pre-training list (the LM text)."""
    sentences = set(transcripts(held_out).values())
    pretrain = {row["text"] for row in pretrain_rows()}
    train = set(transcripts("train-clean-100").values())
    assert not sentences & pretrain
    assert not sentences & train


def test_pretraining_list_is_distinct_and_large():
    """The pre-training sentences are distinct and many more than train-clean-100's."""
    rows = pretrain_rows()
    texts = [row["text"] for row in rows]
    assert len(texts) == len(set(texts)) >= 10 * SPLITS["train-clean-100"][0]
    assert not set(texts) & set(transcripts("train-clean-100").values())
    assert all(set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ") for text in texts)


def test_held_out_voices_are_never_trained_on():
    """Dev and test voices are heard neither in train-clean-100 nor in pre-training."""
    voices = speaker_voices()
    held_out = voices["test-clean"] | voices["dev-clean"]
    assert len(voices["test-clean"]) == SPLITS["test-clean"][1]
    assert not held_out & voices["train-clean-100"]
    assert not held_out & {row["voice"] for row in pretrain_rows()}


def test_held_out_speaker_ids_are_distinct():
    """Speaker ids differ across splits, as in LibriSpeech."""
    ids = {split: {utt_id.split("-")[0] for utt_id in transcripts(split)} for split in SPLITS}
    assert not ids["test-clean"] & (ids["dev-clean"] | ids["train-clean-100"])
    assert not ids["dev-clean"] & ids["train-clean-100"]


def test_embedded_size_and_seed_encoder_folder():
    """``embedded/`` (what git ships) stays under 30 MB; the encoder folder is Hugging Face's."""
    ignored = EMBEDDED / ".cache"
    total = sum(path.stat().st_size for path in EMBEDDED.rglob("*")
                if path.is_file() and ignored not in path.parents)
    assert total < 30 * 2**20
    folder = EMBEDDED / "seed_wavlm"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (folder / name).is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "wavlm"
    assert json.loads((folder / "preprocessor_config.json").read_text())["sampling_rate"] == 16000


def test_pretraining_record_is_shipped():
    """The seed encoder's pre-training run (command, loss curve) is committed next to it."""
    record = EMBEDDED / "seed_wavlm_pretraining"
    run = json.loads((record / "run.json").read_text())
    assert run["steps"] > 0 and "pretrain_seed_encoder.py" in run["command"]
    with open(record / "loss.csv", newline="") as loss_file:
        rows = list(csv.DictReader(loss_file))
    assert int(rows[-1]["step"]) == run["steps"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert (record / "loss.png").is_file()
