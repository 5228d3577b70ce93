"""Each strategy script end to end with --debug on the embedded corpus."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

FAST_BENCHMARK = ["--lm_beam_width", "8", "--benchmark_mac_batches", "1",
                  "--benchmark_warmup_batches", "1", "--lm_decode_workers", "1"]


def recipe_args(yaml_name, corpus, encoder, output_folder, *extra):
    return [
        os.path.join(REPO, "hparams", yaml_name),
        "--data_folder", corpus,
        "--ssl_hub", encoder,
        "--output_folder", str(output_folder),
        "--test_splits=[test-clean]",
        "--dnn_neurons", "32",
        "--debug", "--debug_batches", "2",
        *FAST_BENCHMARK,
        *extra,
    ]


def read_records(output_folder):
    with open(os.path.join(output_folder, "benchmark.json"), encoding="utf-8") as records:
        return json.load(records)


@pytest.mark.parametrize(
    "architecture, technique, factor",
    [("wavlm", "signal_downsampling", 2), ("wavlm", "averaging", 3),
     ("wavlm", "convolutional", 3), ("wav2vec2", "signal_downsampling", 2),
     ("hubert", "convolutional", 1)],
)
def test_downsampled_train_debug(tiny_encoders, embedded_corpus, tmp_path, architecture,
                                 technique, factor):
    from ssl_ctc.benchmarking.five_tests import benchmark_experiment
    from ssl_ctc.downsampling import DownsampledBrain
    from ssl_ctc.recipe import run_recipe

    output_folder = tmp_path / "experiment"
    brain = run_recipe(DownsampledBrain, recipe_args(
        "sig_down8000.yaml", embedded_corpus, tiny_encoders[architecture], output_folder,
        "--downsampling_technique", technique, "--downsampling_factor", str(factor)),
        benchmark=benchmark_experiment)
    assert os.path.isfile(output_folder / "wer_test-clean.txt")
    assert os.path.isfile(output_folder / "train_log.txt")
    records = read_records(output_folder)
    assert len(records) == 5  # a fresh folder: the five tests on the one test set, nothing else
    assert json.loads(json.dumps(brain.benchmark_records)) == records
    assert [record["test"] for record in records] == [
        "gpu_greedy", "gpu_lm", "cpu_greedy", "cpu_lm", "macs"]
    assert {record["brain_class"] for record in records} == {
        "ssl_ctc.downsampling.DownsampledBrain"}
    tags = {(record.get("factor"), record.get("strategy")) for record in records}
    assert tags == {(factor, technique if factor > 1 else "baseline")}
    assert brain.hparams.ctc_upsampling_factor == (2 if factor >= 3 else 1)


def test_layer_removal_script_debug(tiny_encoders, embedded_corpus, tmp_path):
    output_folder = tmp_path / "layers2"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "layer_removal.py"),
         *recipe_args("layer_removal.yaml", embedded_corpus, tiny_encoders["wavlm"],
                      output_folder, "--considered_layers", "2", "--downsampling_factor", "2")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(output_folder)
    assert {record["name"] for record in records} == {"SD2 2L"}
    assert {record["layers"] for record in records} == {2}


def test_layer_removal_sweep_skips_finished_depths(tiny_encoders, embedded_corpus, tmp_path):
    """Run from another folder with relative paths, as a user would; reruns skip finished depths."""
    caller = tmp_path / "caller"
    caller.mkdir()
    environment = {**os.environ, "LAYERS": "2 1", "OUTPUT_ROOT": "sweep", "PYTHON": sys.executable}
    arguments = ["bash", os.path.join(REPO, "layer_removal.sh"),
                 "--data_folder", os.path.relpath(embedded_corpus, caller),
                 "--ssl_hub", tiny_encoders["wavlm"], "--test_splits=[test-clean]",
                 "--dnn_neurons", "32", "--debug", "--debug_batches", "2", *FAST_BENCHMARK]

    def sweep():
        return subprocess.run(arguments, env=environment, cwd=caller, capture_output=True,
                              text=True, timeout=900)

    first = sweep()
    assert first.returncode == 0, first.stderr[-3000:]
    for depth in (2, 1):
        assert os.path.isfile(caller / "sweep" / f"{depth}_layers" / "benchmark.json")
    assert os.path.isfile(caller / "sweep" / "summary.md")
    os.remove(caller / "sweep" / "1_layers" / "benchmark.json")
    second = sweep()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 layers already finished" in second.stdout
    assert "fine-tuning with the first 1 layers" in second.stdout


def test_early_exiting_script_debug_with_threshold_sweep(tiny_encoders, embedded_corpus, tmp_path):
    from early_exiting import EarlyExitEncoder
    from early_exiting.brain import EarlyExitBrain
    from ssl_ctc.benchmarking.five_tests import benchmark_experiment
    from ssl_ctc.recipe import run_recipe

    output_folder = tmp_path / "early_exit"
    brain = run_recipe(EarlyExitBrain, recipe_args(
        os.path.join("early_exiting", "early_exits.yaml"), embedded_corpus,
        tiny_encoders["wavlm"], output_folder, "--exit_layers=[2, 3]", "--exit_threshold", "0.5",
        "--exit_threshold_sweep=[0.0, 10.0]"), benchmark=benchmark_experiment)
    assert isinstance(brain.modules.early_exit, EarlyExitEncoder)
    records = read_records(output_folder)
    assert {record["name"] for record in records} == {"EE H<0.5", "EE H<0", "EE H<10"}
    greedy = {record["name"]: record for record in records if record["test"] == "cpu_greedy"}
    # threshold 0 never fires before the last exit; 10 nats always fires at the first one
    assert greedy["EE H<0"]["extras"]["exit_layers"]["mean"] == 3
    assert greedy["EE H<10"]["extras"]["exit_layers"]["mean"] == 2
    # the trained configuration is told apart from the points of the sweep
    assert {name for name, record in greedy.items() if record["configured"]} == {"EE H<0.5"}
    macs = {record["name"]: record["gmacs_per_batch"] for record in records
            if record["test"] == "macs"}
    assert macs["EE H<10"] < macs["EE H<0"]
