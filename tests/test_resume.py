"""Resuming: a training process killed mid-epoch continues from its last good checkpoint."""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME
from speechbrain.utils.epoch_loop import EpochCounter

import ssl_ctc.checkpoints
import ssl_ctc.recipe
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.checkpoints import BROKEN_CHECKPOINTS_FOLDER, checkpoint_problem

# Files of a complete checkpoint of downsampled_train.py (its recoverables).
CHECKPOINT_FILES = ["ssl", "model", "scheduler_model", "scheduler_ssl", "counter", "brain",
                    "dataloader-TRAIN", "model_optimizer", "ssl_optimizer"]


def short_real_run(corpus, encoder, output_folder):
    """Two real epochs of 4 steps, a checkpoint after every step, a light benchmark."""
    return [
        os.path.join(REPO, "hparams", "sig_down8000.yaml"),
        "--data_folder", corpus,
        "--ssl_hub", encoder,
        "--output_folder", str(output_folder),
        "--test_splits=[test-clean]",
        "--dnn_neurons", "32",
        "--number_of_epochs", "2",
        "--batch_size", "2",
        "--ckpt_interval_minutes", "0",
        "--ckpt_interval_steps", "1",
        "--lm_path", "null",
        "--benchmark_devices=[cpu]",
        "--benchmark_warmup_batches", "0",
    ]


def complete_checkpoints(save_folder):
    """Checkpoint folders whose every file is written, oldest first."""
    folders = [
        folder for folder in pathlib.Path(save_folder).glob(f"{CKPT_PREFIX}*")
        if (folder / METAFNAME).is_file()
        and checkpoint_problem(folder, CHECKPOINT_FILES, CHECKPOINT_FILES) is None
    ]
    return sorted(folders, key=lambda folder: read_meta(folder)["unixtime"])


def read_meta(folder):
    return yaml.safe_load((folder / METAFNAME).read_text())


def epoch_lines(train_log):
    with open(train_log, encoding="utf-8") as log:
        return [line.split(",")[0] for line in log if line.startswith("epoch:")]


def test_killed_training_resumes_and_finished_run_is_not_retrained(
    tiny_encoders, few_utterances_corpus, tmp_path
):
    from ssl_ctc.downsampling import DownsampledBrain

    output_folder = tmp_path / "experiment"
    save_folder = output_folder / "save"
    arguments = short_real_run(few_utterances_corpus, tiny_encoders["wavlm"], output_folder)
    command = [sys.executable, os.path.join(REPO, "downsampled_train.py"), *arguments]

    with open(tmp_path / "killed.log", "w") as killed_log:
        killed = subprocess.Popen(command, cwd=tmp_path, stdout=killed_log,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not save_folder.is_dir() or not complete_checkpoints(save_folder):
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    assert not (output_folder / "train_log.txt").exists(), "killed after its first epoch"
    latest = complete_checkpoints(save_folder)[-1]
    assert read_meta(latest)["end-of-epoch"] is False  # an intra-epoch checkpoint
    cut_by_the_kill = {folder.name for folder in save_folder.glob(f"{CKPT_PREFIX}*")
                       if (folder / METAFNAME).is_file()} - {
        folder.name for folder in complete_checkpoints(save_folder)}

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Loading a checkpoint from {latest}" in resumed.stderr + resumed.stdout
    set_aside = {path.name for path in (save_folder / BROKEN_CHECKPOINTS_FOLDER).glob("*")}
    assert set_aside == cut_by_the_kill
    assert epoch_lines(output_folder / "train_log.txt") == ["epoch: 1", "epoch: 2"]
    # The experiment's snapshot is the strategy script that ran, not the library's recipe.py.
    assert (output_folder / "downsampled_train.py").is_file()
    assert not (output_folder / "recipe.py").exists()
    counters = {int((folder / "counter.ckpt").read_text())
                for folder in complete_checkpoints(save_folder)}
    assert max(counters) == 2
    assert os.path.getsize(output_folder / "wer_test-clean.txt") > 0
    records = json.loads((output_folder / "benchmark.json").read_text())
    assert [record["test"] for record in records] == [
        "gpu_greedy", "gpu_lm", "cpu_greedy", "cpu_lm", "macs"]
    assert {record["status"] for record in records if record["test"] in ("cpu_greedy", "macs")
            } == {"ok"}

    # The same command once more: the epoch counter says it is finished, nothing is retrained.
    train_log = (output_folder / "train_log.txt").read_text()
    checkpoints = sorted(folder.name for folder in save_folder.glob(f"{CKPT_PREFIX}*"))
    brain = ssl_ctc.recipe.run_recipe(DownsampledBrain, arguments,
                                      benchmark=benchmark_experiment)
    assert brain.hparams.epoch_counter.current == 2
    assert (output_folder / "train_log.txt").read_text().startswith(train_log)
    assert epoch_lines(output_folder / "train_log.txt") == ["epoch: 1", "epoch: 2"]
    assert sorted(folder.name for folder in save_folder.glob(f"{CKPT_PREFIX}*")) == checkpoints
    assert json.loads((output_folder / "benchmark.json").read_text())[:len(records)] == records


def break_archive(folder):
    path = folder / "model.ckpt"
    path.write_bytes(path.read_bytes()[:100])
    return "model.ckpt is truncated"


def break_missing_file(folder):
    (folder / "counter.ckpt").unlink()
    return "counter.ckpt is missing"


def break_meta(folder):
    (folder / METAFNAME).write_text("")
    return f"{METAFNAME} is incomplete"


@pytest.mark.parametrize("break_checkpoint", [break_archive, break_missing_file, break_meta])
def test_broken_latest_checkpoint_is_set_aside(tmp_path, caplog, break_checkpoint):
    def checkpointer(model, counter):
        return ssl_ctc.checkpoints.FallbackCheckpointer(
            str(tmp_path / "save"), {"model": model, "counter": counter})

    model, counter = torch.nn.Linear(3, 3), EpochCounter(5)
    saving = checkpointer(model, counter)
    good_weights = {}
    for epoch in (1, 2):
        counter.current = epoch
        good_weights[epoch] = model.weight.detach().clone()
        saved = saving.save_checkpoint()
        with torch.no_grad():
            model.weight.add_(1.0)
    expected = break_checkpoint(saved.path)
    broken_files = sorted(path.name for path in saved.path.iterdir())

    restored_model, restored_counter = torch.nn.Linear(3, 3), EpochCounter(5)
    with caplog.at_level(logging.WARNING):
        checkpointer(restored_model, restored_counter).recover_if_possible()
    assert restored_counter.current == 1
    assert torch.equal(restored_model.weight, good_weights[1])
    assert f"checkpoint '{saved.path}' cannot be loaded ({expected}" in caplog.text
    moved = tmp_path / "save" / ssl_ctc.checkpoints.BROKEN_CHECKPOINTS_FOLDER / saved.path.name
    assert sorted(path.name for path in moved.iterdir()) == broken_files  # kept, not deleted
    assert not saved.path.exists()
