"""Distillation from a finished experiment: loss, alignment, cache, bad teachers, a real run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO
from speechbrain.dataio.dataset import DynamicItemDataset
from test_bad_inputs import brain_that_must_not_train, finished_experiment, snapshot  # noqa: F401
from test_recipes_end_to_end import read_records, recipe_args

import ssl_ctc.recipe
from early_exiting.brain import EarlyExitBrain
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.distillation.checks import TEACHER_RECORD, DistillationSettings, check_student_folder
from ssl_ctc.distillation.loss import distillation_loss, span_log_posteriors, utterance_kl
from ssl_ctc.distillation.teacher import CACHE_FILE, Distiller
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.errors import ConfigurationError


def random_log_probs(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).mul(3).log_softmax(-1)


def padded(utterances, fill=7.0):
    """Utterances ``[T_i, V]`` padded into a batch with garbage, and their lengths."""
    batch = torch.full((len(utterances), max(len(u) for u in utterances),
                        utterances[0].shape[-1]), fill)
    for index, utterance in enumerate(utterances):
        batch[index, :len(utterance)] = utterance
    return batch, torch.tensor([len(u) for u in utterances])


@pytest.mark.parametrize("student_stride", [320, 480, 640])
def test_an_utterances_term_is_the_same_alone_and_padded_in_a_batch(student_stride):
    teachers = [random_log_probs(frames, 6, seed=frames) for frames in (9, 20)]
    students = [random_log_probs(round(len(t) * 320 / student_stride), 6, seed=len(t) + 1)
                for t in teachers]

    def loss(indices):
        student, student_lengths = padded([students[i] for i in indices])
        teacher, teacher_lengths = padded([teachers[i] for i in indices], fill=-3.0)
        return distillation_loss(student, student_lengths, teacher, teacher_lengths, 2.0,
                                 student_stride, 320)

    alone = [loss([0]), loss([1])]
    assert torch.allclose(loss([0, 1]), (alone[0] + alone[1]) / 2, atol=1e-6)
    assert torch.allclose(loss([1, 0]), loss([0, 1]), atol=1e-6)
    assert alone[0] > 0


def test_the_kl_is_zero_when_the_student_is_the_teacher_whatever_the_padding():
    log_probs, lengths = padded([random_log_probs(frames, 5, seed=frames) for frames in (4, 7)],
                                fill=float("-inf"))
    assert float(distillation_loss(log_probs, lengths, log_probs, lengths, 2.0, 320, 320)) == 0
    assert torch.equal(utterance_kl(log_probs, log_probs, lengths), torch.zeros(2))


def test_a_half_rate_student_learns_what_the_teacher_emits_in_the_two_frames_it_spans():
    certain = (torch.eye(5) * 30).log_softmax(-1)[None]  # frame i certain of label i; 0: blank
    span = span_log_posteriors(certain, torch.tensor([5]), 3, 640, 320).exp()[0]
    expected = torch.tensor([[0, 1.0, 0, 0, 0],  # blank, then A: A (the mean: 50/50)
                             [0, 0, 0.5, 0.5, 0],  # two characters: the student cannot emit both
                             [0, 0, 0, 0, 1.0]])  # the odd last frame alone
    assert torch.allclose(span, expected, atol=1e-6)
    all_blank = (torch.eye(5)[[0, 0, 0, 0]] * 30).log_softmax(-1)[None]
    blank = span_log_posteriors(all_blank, torch.tensor([4]), 2, 640, 320).exp()[0, :, 0]
    assert blank.min() > 0.99
    shorter = span_log_posteriors(certain, torch.tensor([3]), 3, 640, 320).exp()[0]
    assert torch.allclose(shorter[2], torch.eye(5)[2], atol=1e-6)  # past its end: its last frame
    same_rate = span_log_posteriors(certain, torch.tensor([4]), 5, 320, 320)[0]
    assert torch.equal(same_rate, certain[0, [0, 1, 2, 3, 3]])


def test_every_exit_head_learns_from_the_teacher():
    brain = EarlyExitBrain.__new__(EarlyExitBrain)
    mixed = []
    brain.distiller = SimpleNamespace(
        mix=lambda loss, predictions, stride: mixed.append((predictions, stride)) or loss)
    brain.hparams = SimpleNamespace(
        exit_loss_weights=None, ctc_cost=lambda *args: torch.tensor(1.0),
        ssl=SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(conv_stride=[5, 2, 2]))))
    exits = {layer: random_log_probs(1, 4, 6, seed=layer) for layer in (2, 3)}
    teacher = (random_log_probs(1, 4, 6, seed=9), torch.tensor([4]))
    predictions = {"log_probs": exits[3], "lengths": torch.tensor([4]),
                   "exit_log_probs": exits, "teacher": teacher}
    batch = SimpleNamespace(tokens=(torch.tensor([[1, 2]]), torch.tensor([1.0])))
    assert float(brain.compute_ctc_loss(predictions, batch)) == 2.0
    assert [entry["log_probs"] for entry, _ in mixed] == [exits[2], exits[3]]
    assert all(entry["teacher"] is teacher and stride == 20 for entry, stride in mixed)


class CountingTeacher:
    """A teacher whose forwards are counted: label 1 on every frame, a frame per 320 samples."""

    hparams = SimpleNamespace(test_batch_size=2)
    device = "cpu"

    def __init__(self):
        self.utterances = 0

    def infer_batch(self, wavs, wav_lens):
        self.utterances += len(wavs)
        lengths = (wav_lens * wavs.shape[1] / 320).round().long()
        log_probs = torch.full((len(wavs), int(lengths.max()), 4), -9.0)
        log_probs[..., 1] = 0.0
        return {"log_probs": log_probs, "lengths": lengths}


def test_the_cache_is_computed_once_and_again_when_the_teacher_or_the_csv_changes(tmp_path):
    data = DynamicItemDataset({
        name: {"sig": torch.zeros(samples), "wrd": "A", "duration": samples / 16000}
        for name, samples in (("short", 640), ("long", 1600), ("mid", 960))})
    data.set_output_keys(["id", "sig", "wrd", "duration"])
    train_csv = tmp_path / "train.csv"
    train_csv.write_text("ID,duration,wav,wrd\nshort,0.04,x.flac,A\n")
    settings = DistillationSettings(tmp_path, 0.5, 2.0, True, tmp_path)
    distiller = Distiller(settings, data, train_csv)
    distiller.teacher = CountingTeacher()
    distiller.record = {"teacher_weights_sha256": "a" * 64}

    def fill():
        distiller.teacher.utterances = 0
        distiller.fill_cache()
        return distiller.teacher.utterances

    assert fill() == 3
    cached = torch.load(tmp_path / CACHE_FILE, weights_only=True)["log_probs"]
    assert {name: len(frames) for name, frames in cached.items()} == {
        "short": 2, "mid": 3, "long": 5}  # each utterance's valid frames only
    assert fill() == 0  # fresh: nothing recomputed
    distiller.record = {"teacher_weights_sha256": "b" * 64}
    assert fill() == 3  # another teacher
    assert fill() == 0
    train_csv.write_text(train_csv.read_text() + "mid,0.06,y.flac,A\n")
    assert fill() == 3  # another training set
    distiller.cache = cached
    batch = SimpleNamespace(id=["long", "short"], sig=(torch.zeros(2, 1600), None))
    log_probs, lengths = distiller.teacher_outputs(batch)
    assert log_probs.shape == (2, 5, 4) and lengths.tolist() == [5, 2]


def test_a_student_folder_keeps_the_teacher_and_settings_it_started_with(tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    teacher = tmp_path / "teacher"
    check_student_folder(teacher, 0.5, 2.0, save)  # a new folder
    (save / TEACHER_RECORD).write_text(json.dumps({
        "teacher": str(teacher), "distillation_weight": 0.5, "distillation_temperature": 2.0}))
    check_student_folder(teacher, 0.5, 2.0, save)  # the same again: a rerun
    with pytest.raises(ConfigurationError, match="distillation_weight: output_folder .* was "
                       "trained with distillation_weight 0.5 .* this run has 0.3"):
        check_student_folder(teacher, 0.3, 2.0, save)
    with pytest.raises(ConfigurationError, match="teacher: output_folder .* this run has None"):
        check_student_folder(None, 0.5, 2.0, save)


def fake_teacher(tmp_path, corpus, **changes):
    """A teacher folder with what a finished run leaves (nothing loads it), ``changes`` applied.

    ``changes``: YAML keys to set, ``checkpoint=False`` or ``benchmark=False`` to leave out.
    """
    folder = tmp_path / "teacher"
    keys = {"output_neurons": 31, "blank_index": 0, "sample_rate": 16000,
            "data_folder": corpus, "train_splits": "[train-clean-100]"}
    keys.update({key: value for key, value in changes.items() if key in keys})
    (folder / "save").mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text(
        "brain_class: !name:ssl_ctc.downsampling.DownsampledBrain\n"
        "ssl: !apply:ssl_ctc.encoder.load_ssl_encoder\n    source: /somewhere\n"
        + "".join(f"{key}: {value}\n" for key, value in keys.items()))
    if changes.get("checkpoint", True):
        (folder / "save" / "CKPT+2026-01-01+00-00-00+00").mkdir()
    if changes.get("benchmark", True):
        (folder / "benchmark.json").write_text("[]")
    return folder


def teacher_case(expected, **changes):
    """A case: a fake teacher with ``changes``; the message expected (``{teacher}`` filled)."""
    def case(setup):
        teacher = fake_teacher(setup.tmp_path, setup.corpus, **changes)
        return {"--teacher": str(teacher)}, expected.format(teacher=teacher)

    return case


def missing_teacher(setup):
    return {"--teacher": "/nonexistent/teacher"}, "teacher '/nonexistent/teacher' does not exist"


def inference_folder_alone(setup):
    folder = setup.tmp_path / "copied_inference"
    folder.mkdir()
    (folder / "inference.json").write_text("{}")
    return {"--teacher": str(folder)}, (
        f"teacher '{folder}' is an inference folder outside its experiment")


def weight_above_one(setup):
    return {"--distillation_weight": "1.5"}, (
        "distillation_weight must be a number in [0, 1], got 1.5")


def zero_temperature(setup):
    return {"--distillation_temperature": "0"}, (
        "distillation_temperature must be a number > 0, got 0")


def plain_checkpoints_in_the_output_folder(setup):
    teacher = fake_teacher(setup.tmp_path, setup.corpus)
    return {"--teacher": str(teacher)}, (
        f"teacher: output_folder '{setup.experiment}' holds checkpoints of a run without a teacher")


BAD_TEACHERS = {
    "missing": missing_teacher,
    "no_checkpoint": teacher_case("teacher '{teacher}' is unfinished: no checkpoint in "
                                  "'{teacher}/save'", checkpoint=False),
    "no_benchmark": teacher_case("teacher '{teacher}' is unfinished: no benchmark.json",
                                 benchmark=False),
    "other_labels": teacher_case("teacher '{teacher}' has output_neurons 29 "
                                 "({teacher}/hyperparams.yaml), the student 31: another label set",
                                 output_neurons=29),
    "other_sample_rate": teacher_case("teacher '{teacher}' has sample_rate 8000", sample_rate=8000),
    "other_data_folder": teacher_case("teacher '{teacher}' has data_folder '/other/LibriSpeech'",
                                      data_folder="/other/LibriSpeech"),
    "other_train_splits": teacher_case("teacher '{teacher}' has train_splits ['train-clean-360']",
                                       train_splits="[train-clean-360]"),
    "inference_folder_alone": inference_folder_alone,
    "weight_above_one": weight_above_one,
    "zero_temperature": zero_temperature,
    "plain_checkpoints_in_the_output_folder": plain_checkpoints_in_the_output_folder,
}


@pytest.mark.parametrize("case", BAD_TEACHERS)
def test_a_bad_teacher_or_setting_stops_before_training_and_loses_nothing(
        tiny_encoders, small_corpus, finished_experiment, tmp_path, case):  # noqa: F811
    setup = SimpleNamespace(corpus=small_corpus, experiment=finished_experiment, tmp_path=tmp_path)
    options, expected = BAD_TEACHERS[case](setup)
    produced = snapshot(finished_experiment)
    options = {"--data_folder": small_corpus, "--ssl_hub": tiny_encoders["wavlm"],
               "--output_folder": str(finished_experiment), "--test_splits": "[test-clean]",
               "--dnn_neurons": "16", **options}
    argv = [os.path.join(REPO, "hparams", "downsampling.yaml")] + [
        f"{option}={value}" for option, value in options.items()]
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        ssl_ctc.recipe.run_recipe(brain_that_must_not_train("sig_down8000.yaml"), argv,
                                  benchmark=benchmark_experiment)
    assert snapshot(finished_experiment).items() >= produced.items()


def test_the_script_names_a_missing_teacher_in_one_line_with_status_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "layer_removal.py", "hparams/layer_removal.yaml",
         "--data_folder", os.path.join(REPO, "embedded", "LibriSpeech"),
         "--output_folder", str(tmp_path / "out"), "--considered_layers", "2",
         "--ssl_hub", os.path.join(REPO, "embedded", "seed_wavlm"),
         "--teacher", str(tmp_path / "no_teacher")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: teacher '{tmp_path / 'no_teacher'}' does not exist (give a finished experiment "
        "folder of this recipe, e.g. results/demo/baseline)")
    assert not (tmp_path / "out" / "hyperparams.yaml").exists()  # no experiment started


def test_a_distilled_debug_run_records_its_teacher(tiny_encoders, few_utterances_corpus, tmp_path):
    encoder = tiny_encoders["wavlm"]
    teacher = tmp_path / "teacher"
    teacher_args = [argument for argument in recipe_args(
        "downsampling.yaml", few_utterances_corpus, encoder, teacher, "--downsampling_factor", "1",
        "--number_of_epochs", "1", "--lm_path", "null") if argument != "--debug"]
    position = teacher_args.index("--debug_batches")
    del teacher_args[position:position + 2]  # a real run: --debug keeps no checkpoint
    ssl_ctc.recipe.run_recipe(DownsampledBrain, teacher_args, benchmark=benchmark_experiment)

    student = tmp_path / "SD2_KD"
    brain = ssl_ctc.recipe.run_recipe(DownsampledBrain, recipe_args(
        "downsampling.yaml", few_utterances_corpus, encoder, student, "--lm_path", "null",
        "--teacher", str(teacher / "inference"), "--distillation_weight", "0.7"),
        benchmark=benchmark_experiment)
    record = json.loads((student / "save" / TEACHER_RECORD).read_text())
    assert record["teacher"] == str(teacher) and record["teacher_name"] == "No downsampling"
    assert record["teacher_checkpoint"].startswith("CKPT+")
    assert record["teacher_wer"].keys() == {"test-clean"} and len(
        record["teacher_weights_sha256"]) == 64
    assert (student / "save" / CACHE_FILE).is_file()
    records = read_records(student)
    assert len(records) == 5 and {r["name"] for r in records} == {"SD2 +KD"}
    assert {(r["teacher"], r["teacher_weights_sha256"], r["distillation_weight"],
             r["distillation_temperature"], r["strategy"]) for r in records} == {
        (str(teacher), record["teacher_weights_sha256"], 0.7, 1.0,
         "signal_downsampling+distillation")}
    assert records[0]["distillation_alignment"] == (
        "the teacher's emissions over each student frame (640 vs 320 samples)")
    log = (student / "log.txt").read_text()  # the way to the teacher's frame rate, before training
    assert log.index("--ctc_upsampling_factor 2 gives it the teacher's frame rate") < log.index(
        "Going into epoch 1")
    card = (student / "inference" / "README.md").read_text()
    assert card.startswith("# SD2 +KD") and f"distilled from the teacher `{teacher}`" in card
    assert brain.experiment_tags()["teacher_checkpoint"] == record["teacher_checkpoint"]
    assert any(parameter.requires_grad for parameter in brain.modules.ssl.parameters())
    assert Path(student / "inference" / "inference.json").is_file()
