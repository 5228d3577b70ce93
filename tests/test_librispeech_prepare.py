"""Data preparation on the shipped corpus and on broken copies of it."""

import csv
import os

import pytest
import soundfile

from librispeech_prepare import DataPreparationError, prepare_librispeech

SPLITS = {
    "tr_splits": ["train-clean-100"],
    "dev_splits": ["dev-clean"],
    "te_splits": ["test-clean"],
}


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as csv_file:
        return list(csv.DictReader(csv_file))


def first_audio(corpus, split="train-clean-100"):
    for folder, _, files in sorted(os.walk(os.path.join(corpus, split))):
        for name in sorted(files):
            if name.endswith(".flac"):
                return os.path.join(folder, name)
    raise AssertionError("no audio in corpus")


def test_prepares_embedded_corpus(embedded_corpus, tmp_path):
    paths = prepare_librispeech(embedded_corpus, str(tmp_path), merge_lst=["train-clean-100"],
                                **SPLITS)
    assert set(paths) == {"train-clean-100", "dev-clean", "test-clean", "train.csv"}
    rows = read_rows(paths["test-clean"])
    assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
    assert len(rows) >= 20
    for row in rows:
        assert row["wav"].startswith("$data_root/test-clean/")
        audio = row["wav"].replace("$data_root", embedded_corpus)
        info = soundfile.info(audio)
        assert float(row["duration"]) == pytest.approx(info.frames / info.samplerate, abs=1e-3)
        assert row["wrd"] == row["wrd"].upper() and row["ID"].startswith(row["spk_id"] + "-")
    assert len(read_rows(paths["train.csv"])) == len(read_rows(paths["train-clean-100"]))
    test_ids = {row["ID"] for row in rows}
    assert not test_ids & {row["ID"] for row in read_rows(paths["train.csv"])}


def test_second_call_skips_and_new_options_redo(small_corpus, tmp_path):
    paths = prepare_librispeech(small_corpus, str(tmp_path), **SPLITS)
    stamp = os.path.getmtime(paths["dev-clean"])
    os.utime(paths["dev-clean"], (stamp - 100, stamp - 100))
    prepare_librispeech(small_corpus, str(tmp_path), **SPLITS)
    assert os.path.getmtime(paths["dev-clean"]) == stamp - 100
    prepare_librispeech(small_corpus, str(tmp_path), merge_lst=["train-clean-100"], **SPLITS)
    assert os.path.getmtime(paths["dev-clean"]) > stamp - 100
    assert os.path.isfile(os.path.join(tmp_path, "train.csv"))


def break_missing_folder(corpus):
    return "/nonexistent/LibriSpeech", "does not exist"


def break_missing_split(corpus):
    import shutil

    shutil.rmtree(os.path.join(corpus, "dev-clean"))
    return corpus, "split folder 'dev-clean' not found"


def break_transcript_without_audio(corpus):
    audio = first_audio(corpus)
    os.remove(audio)
    return corpus, os.path.basename(audio)


def break_audio_without_transcript(corpus):
    audio = first_audio(corpus)
    extra = audio.replace(".flac", "9.flac")
    os.link(audio, extra)
    return corpus, os.path.basename(extra)


def break_empty_audio(corpus):
    audio = first_audio(corpus)
    # libsndfile cannot write a zero-frame FLAC; a zero-frame WAV header is read the same way.
    soundfile.write(audio, [], 16000, format="WAV", subtype="PCM_16")
    return corpus, f"empty audio file '{audio}'"


def break_not_audio(corpus):
    audio = first_audio(corpus)
    with open(audio, "w") as not_audio:
        not_audio.write("this is not a flac file")
    return corpus, f"unreadable audio file '{audio}'"


def break_truncated_audio(corpus):
    audio = first_audio(corpus)
    with open(audio, "rb") as flac:
        header = flac.read(20)
    with open(audio, "wb") as flac:
        flac.write(header)
    return corpus, f"'{audio}'"


def break_sample_rate(corpus):
    audio = first_audio(corpus)
    signal, _ = soundfile.read(audio)
    soundfile.write(audio, signal[::2], 8000, format="FLAC")
    return corpus, "8000 Hz"


@pytest.mark.parametrize(
    "break_corpus",
    [break_missing_folder, break_missing_split, break_transcript_without_audio,
     break_audio_without_transcript, break_empty_audio, break_not_audio, break_truncated_audio,
     break_sample_rate],
)
def test_broken_corpus_names_the_problem(small_corpus, tmp_path, break_corpus):
    corpus, expected = break_corpus(small_corpus)
    with pytest.raises(DataPreparationError, match=expected.replace("(", r"\(")):
        prepare_librispeech(corpus, str(tmp_path / "prep"), **SPLITS)
    assert not os.path.exists(tmp_path / "prep" / "prepare_options.json")
