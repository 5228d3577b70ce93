"""The bad input catalogue: one case per line of the README's troubleshooting section.

Every case runs the real entry (``ssl_ctc.recipe.run_recipe``) on an output folder that
already holds a finished experiment, and checks that the run stops before
training with a message naming the file, key or value, and that none of the
files already produced changed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO
from test_librispeech_prepare import (
    break_audio_without_transcript,
    break_empty_audio,
    break_missing_split,
    break_not_audio,
    break_sample_rate,
    break_transcript_without_audio,
    break_truncated_audio,
    first_audio,
)

import ssl_ctc.recipe
from early_exiting.brain import EarlyExitBrain
from librispeech_prepare import CSV_COLUMNS
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.layer_removal import LayerRemovalBrain

BRAINS = {  # YAML -> the Brain its strategy script runs
    "sig_down8000.yaml": DownsampledBrain,
    "layer_removal.yaml": LayerRemovalBrain,
    "early_exiting/early_exits.yaml": EarlyExitBrain,
}
TINY_EXITS = {"--exit_layers": "[2, 3]"}  # the tiny encoders have 3 layers


def brain_that_must_not_train(yaml_name):
    """The strategy's Brain, failing the test if training starts."""
    class MustNotTrain(BRAINS[yaml_name]):
        def fit(self, *args, **kwargs):
            raise AssertionError("training started despite the bad input")

    return MustNotTrain


def manifest(columns=CSV_COLUMNS):
    """A one-utterance manifest CSV with the given columns."""
    values = {"ID": "1-2-0000", "duration": "1.0", "wav": "$data_root/x.flac", "spk_id": "1",
              "wrd": "HI"}
    return ",".join(columns) + "\n" + ",".join(values[column] for column in columns) + "\n"


@pytest.fixture
def finished_experiment(tmp_path):
    """An output folder with what a finished run leaves: results, manifests, a checkpoint."""
    folder = tmp_path / "experiment"
    produced = {
        "benchmark.json": json.dumps([{"test": "cpu_greedy", "wer": 12.5}]),
        "benchmark.csv": "test,wer\ncpu_greedy,12.5\n",
        "wer_test-clean.txt": "%WER 12.50 [ 1 / 8, 0 ins, 0 del, 1 sub ]\n",
        "train_log.txt": "epoch: 1, lr_model: 9.00e-01 - train loss: 1.00\n",
        "prepare_options.json": json.dumps({"data_folder": "/elsewhere"}),
        "train.csv": manifest(),
        "train-clean-100.csv": manifest(),
        "dev-clean.csv": manifest(),
        "test-clean.csv": manifest(),
        "save/CKPT+2026-01-01+00-00-00+00/CKPT.yaml": "end-of-epoch: true\nWER: 12.5\n",
        "save/CKPT+2026-01-01+00-00-00+00/counter.ckpt": "1",
    }
    for name, text in produced.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def snapshot(folder):
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# Each case breaks one thing and returns (YAML, command-line options, expected message).


def missing_data_folder(setup):
    return "sig_down8000.yaml", {"--data_folder": "/nonexistent/LibriSpeech"}, (
        "data_folder '/nonexistent/LibriSpeech' does not exist")


def empty_data_folder(setup):
    empty = setup.tmp_path / "empty"
    empty.mkdir()
    return "sig_down8000.yaml", {"--data_folder": str(empty)}, (
        f"split folder 'train-clean-100' not found in data_folder '{empty}' (found: no folders)")


def corpus_case(break_corpus):
    """A case from one of test_librispeech_prepare's corpus breakers."""

    def case(setup):
        _, expected = break_corpus(setup.corpus)
        return "sig_down8000.yaml", {}, expected

    case.__name__ = break_corpus.__name__.removeprefix("break_")
    return case


def different_sample_rate(setup):
    audio = first_audio(setup.corpus)
    break_sample_rate(setup.corpus)
    return "sig_down8000.yaml", {}, f"audio file '{audio}' is sampled at 8000 Hz"


def csv_without_column(setup):
    (setup.experiment / "dev-clean.csv").write_text(
        manifest(columns=[column for column in CSV_COLUMNS if column != "wrd"]))
    return "sig_down8000.yaml", {"--skip_prep": "True"}, (
        f"CSV file '{setup.experiment / 'dev-clean.csv'}' has no column wrd")


def unknown_downsampling_technique(setup):
    return "sig_down8000.yaml", {"--downsampling_technique": "decimation"}, (
        "unknown downsampling_technique 'decimation'; valid: averaging, convolutional, "
        "signal_downsampling")


def unknown_exit_criterion(setup):
    return "early_exiting/early_exits.yaml", {**TINY_EXITS, "--exit_criterion": "confidence"}, (
        "unknown exit criterion 'confidence'; valid names: entropy, similarity, fixed")


def unknown_ssl_architecture(setup):
    encoder = shutil.copytree(setup.encoder, setup.tmp_path / "speechnet")
    config = json.loads((encoder / "config.json").read_text())
    (encoder / "config.json").write_text(json.dumps({**config, "model_type": "speechnet"}))
    return "sig_down8000.yaml", {"--ssl_hub": str(encoder)}, (
        f"ssl_hub '{encoder}' holds a 'speechnet' model")


def impossible_downsampling_factor(setup):
    return "sig_down8000.yaml", {"--downsampling_factor": "0"}, (
        "downsampling_factor must be an integer >= 1 (1 = no downsampling), got 0")


def impossible_layer_count(setup):
    return "layer_removal.yaml", {"--considered_layers": "9"}, (
        "considered_layers must be between 1 and the encoder's depth 3, got 9")


def impossible_exit_layer(setup):
    return "early_exiting/early_exits.yaml", {"--exit_layers": "[2, 5]"}, (
        "exit layer 5 is outside 1..3: the encoder has 3 transformer layers")


def impossible_exit_threshold(setup):
    return "early_exiting/early_exits.yaml", {**TINY_EXITS, "--exit_threshold": "-0.1"}, (
        "entropy threshold must be >= 0 nats, got -0.1")


def missing_lm_file(setup):
    return "sig_down8000.yaml", {"--lm_path": "/nonexistent/4-gram.arpa"}, (
        "lm_path: no such file: /nonexistent/4-gram.arpa")


def unwritable_output_folder(setup):
    below_a_file = setup.experiment / "benchmark.json" / "rerun"
    return "sig_down8000.yaml", {"--output_folder": str(below_a_file)}, (
        f"save_folder '{below_a_file / 'save'}' cannot be written (Not a directory")


def cuda_without_cuda(setup):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return "sig_down8000.yaml", {"--device": "cuda"}, (
        "--device cuda was given but no CUDA device is available; use --device cpu")


CATALOGUE = [
    missing_data_folder,
    empty_data_folder,
    corpus_case(break_missing_split),
    corpus_case(break_transcript_without_audio),
    corpus_case(break_audio_without_transcript),
    corpus_case(break_empty_audio),
    corpus_case(break_truncated_audio),
    corpus_case(break_not_audio),
    different_sample_rate,
    csv_without_column,
    unknown_downsampling_technique,
    unknown_exit_criterion,
    unknown_ssl_architecture,
    impossible_downsampling_factor,
    impossible_layer_count,
    impossible_exit_layer,
    impossible_exit_threshold,
    missing_lm_file,
    unwritable_output_folder,
    cuda_without_cuda,
]


@pytest.mark.parametrize("break_input", CATALOGUE, ids=[case.__name__ for case in CATALOGUE])
def test_bad_input_stops_before_training_and_loses_nothing(
    tiny_encoders, small_corpus, finished_experiment, tmp_path, break_input
):
    setup = SimpleNamespace(corpus=small_corpus, encoder=tiny_encoders["wavlm"],
                            experiment=finished_experiment, tmp_path=tmp_path)
    yaml_name, options, expected = break_input(setup)
    produced = snapshot(finished_experiment)
    options = {"--data_folder": small_corpus, "--ssl_hub": setup.encoder,
               "--output_folder": str(finished_experiment), "--test_splits": "[test-clean]",
               "--dnn_neurons": "16", **options}
    argv = [os.path.join(REPO, "hparams", yaml_name)] + [
        f"{option}={value}" for option, value in options.items()]

    with pytest.raises((ValueError, OSError), match=re.escape(expected)):
        ssl_ctc.recipe.run_recipe(brain_that_must_not_train(yaml_name), argv,
                                   benchmark=benchmark_experiment)
    assert snapshot(finished_experiment).items() >= produced.items()



def run_script(*arguments, env=None):
    """Run a top-level script of the recipe as a user would; return the finished process."""
    return subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_a_caught_error_is_one_message_and_status_2(tmp_path):
    arguments = ("downsampled_train.py", "hparams/sig_down8000.yaml", "--data_folder",
                 str(tmp_path / "missing"), "--output_folder", str(tmp_path / "out"),
                 "--ssl_hub", os.path.join(REPO, "embedded", "seed_wavlm"))
    run = run_script(*arguments)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        f"error: data_folder '{tmp_path / 'missing'}' does not exist")
    with_traceback = run_script(*arguments, env={"SSL_RECIPE_TRACEBACK": "1"})
    assert with_traceback.returncode != 0 and "Traceback" in with_traceback.stderr


def test_help_prints_once_with_the_recipe_keys():
    run = run_script("layer_removal.py", "hparams/layer_removal.yaml", "--help")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("usage:") == 1
    assert ("--considered_layers 18    # keep only the first N transformer layers"
            in run.stdout)
    sweep = subprocess.run(["bash", "layer_removal.sh", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert sweep.stdout.count("usage:") == 1 and "LAYERS" in sweep.stdout
    assert "Traceback" not in sweep.stderr
