"""torchrun: two processes with gloo on CPU train on disjoint shards; results are written once."""

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import EMBEDDED_CORPUS, REPO

import ssl_ctc.recipe

RECORDER = os.path.join(REPO, "tests", "record_train_ids.py")


def train_ids(output_folder):
    with open(os.path.join(output_folder, "train.csv"), newline="", encoding="utf-8") as rows:
        return {row["ID"] for row in csv.DictReader(rows)}


def recorded_ids(output_folder, rank):
    with open(os.path.join(output_folder, f"train_ids_rank{rank}.txt"), encoding="utf-8") as ids:
        return ids.read().split()


@pytest.mark.parametrize(
    "brain_class, yaml_name, strategy_args",
    [
        ("ssl_ctc.downsampling.DownsampledBrain", "sig_down8000.yaml",
         ["--downsampling_technique", "convolutional", "--downsampling_factor", "2",
          "--lm_path", os.path.join(EMBEDDED_CORPUS, "4-gram.arpa")]),
        ("early_exiting.brain.EarlyExitBrain", os.path.join("early_exiting", "early_exits.yaml"),
         ["--exit_layers=[2, 3]", "--lm_path", "null"]),
    ],
    ids=["learned_downsampling", "early_exit"],
)
def test_two_gloo_processes_train_disjoint_shards(tiny_encoders, few_utterances_corpus, tmp_path,
                                                  brain_class, yaml_name, strategy_args):
    output_folder = tmp_path / "experiment"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        RECORDER, brain_class, os.path.join(REPO, "hparams", yaml_name),
        "--distributed_backend", "gloo",
        "--data_folder", few_utterances_corpus,
        "--ssl_hub", tiny_encoders["wavlm"],
        "--output_folder", str(output_folder),
        "--test_splits=[test-clean]",
        "--dnn_neurons", "32",
        "--number_of_epochs", "1",
        "--batch_size", "2",
        "--benchmark_devices=[cpu]",
        "--benchmark_warmup_batches", "0",
        "--lm_beam_width", "8",
        "--lm_decode_workers", "1",
        *strategy_args,
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    shards = [recorded_ids(output_folder, rank) for rank in (0, 1)]
    assert all(shards), "a process trained on nothing"
    assert not set(shards[0]) & set(shards[1]), "the processes shared utterances"
    assert sorted(shards[0] + shards[1]) == sorted(train_ids(output_folder))

    records = json.loads((output_folder / "benchmark.json").read_text())
    assert [record["test"] for record in records] == [
        "gpu_greedy", "gpu_lm", "cpu_greedy", "cpu_lm", "macs"]  # one process wrote, once
    assert {record["status"] for record in records if record["test"] in ("cpu_greedy", "macs")
            } == {"ok"}
    assert os.path.getsize(output_folder / "wer_test-clean.txt") > 0


def test_benchmark_gets_the_modules_out_of_their_wrappers():
    wrapped, plain = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    wrapper = torch.nn.DataParallel(wrapped)  # stands for DistributedDataParallel on CPU
    brain = SimpleNamespace(modules=torch.nn.ModuleDict({"ssl": wrapper, "ctc_lin": plain}))
    with ssl_ctc.recipe.unwrapped_modules(brain) as modules:
        assert modules["ssl"] is wrapped and modules["ctc_lin"] is plain
    assert brain.modules["ssl"] is wrapper
