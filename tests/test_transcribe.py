"""The inference folder and transcribe.py: the benchmark's transcripts, offline loading, bad input.

Three experiments on tiny random encoders are run once per session: a learned
downsampler with CTC upsampling (``--debug``), a layer-removal one (one real epoch,
so that it keeps checkpoints in ``save/``), and an early-exit one with
``--test_only`` (its heads as initialised). They use a corpus cut from the embedded
one (its test split: the 3 shortest utterances of each test chapter, 12 in all, so
that batches mix lengths); each run writes its ``inference/`` folder at the end
(``run_recipe``).
"""

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import soundfile
import torch
from benchmark_fixtures import write_arpa
from speechbrain.dataio.dataset import DynamicItemDataset
from test_recipes_end_to_end import recipe_args

import transcribe
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.benchmarking.passes import transcribe_batches
from ssl_ctc.benchmarking.settings import BenchmarkSettings
from ssl_ctc.data import make_test_loader, read_waveform
from ssl_ctc.inference.loading import HPARAMS_FILE, INFERENCE_FORMAT_VERSION, MANIFEST
from ssl_ctc.lm_decoding import LMDecoder

REPO = Path(__file__).resolve().parent.parent
NOT_DEBUG = "not --debug"  # an experiment that runs for real (one epoch): it keeps checkpoints
EXPERIMENTS = {
    "CL3": ("sig_down8000.yaml", "ssl_ctc.downsampling.DownsampledBrain",
            ["--downsampling_technique", "convolutional", "--downsampling_factor", "3"]),
    "2L": ("layer_removal.yaml", "ssl_ctc.layer_removal.LayerRemovalBrain",
           ["--considered_layers", "2", "--downsampling_factor", "1", "--lm_path", "null",
            "--number_of_epochs", "1", NOT_DEBUG]),  # real checkpoints in save/
    "EE": (os.path.join("early_exiting", "early_exits.yaml"), "early_exiting.brain.EarlyExitBrain",
           ["--exit_layers=[2, 3]", "--exit_threshold", "0.5", "--lm_path", "null",
            "--test_only"]),  # untrained heads: the interface is what is tested
}
# The fast benchmark of the end-to-end tests, CPU only, one debug epoch.
FAST = ["--benchmark_devices=[cpu]", "--debug_epochs", "1"]
# Utterances kept per chapter of each split of the embedded corpus.
KEPT_PER_CHAPTER = {"train-clean-100": 1, "dev-clean": 1, "test-clean": 3}


@pytest.fixture(scope="session")
def corpus(embedded_corpus, tmp_path_factory):
    """The first utterances of each chapter of the embedded corpus, a bigram LM of their text."""
    target = tmp_path_factory.mktemp("transcribe_corpus") / "LibriSpeech"
    sentences = []
    for split, count in KEPT_PER_CHAPTER.items():
        for transcript in sorted(Path(embedded_corpus, split).rglob("*.trans.txt")):
            chapter = target / transcript.parent.relative_to(embedded_corpus)
            chapter.mkdir(parents=True)
            lines = [line for line in transcript.read_text().splitlines() if line.strip()]
            kept = sorted(lines, key=lambda line: len(line))[:count]  # the shortest: fast
            (chapter / transcript.name).write_text("\n".join(kept) + "\n")
            sentences += [line.split(" ", 1)[1] for line in kept]
            for line in kept:
                name = line.split(" ", 1)[0] + ".flac"
                shutil.copy(transcript.parent / name, chapter / name)
    write_arpa(target / "4-gram.arpa", sentences)  # small: loads in a moment
    return str(target)


@pytest.fixture(scope="session")
def experiments(tiny_encoders, corpus, tmp_path_factory):
    """Name -> (output folder, brain), each experiment trained on first use (once)."""
    from ssl_ctc.inference.loading import experiment_brain_class
    from ssl_ctc.recipe import run_recipe

    root = tmp_path_factory.mktemp("experiments")
    trained = {}

    class Experiments(dict):
        def __missing__(self, name):
            if name in trained:  # failed before: fail again without retraining
                raise trained[name]
            yaml_name, brain_name, overrides = EXPERIMENTS[name]
            folder = root / name
            module_name, _, class_name = brain_name.rpartition(".")
            brain_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
            try:
                args = recipe_args(yaml_name, corpus, tiny_encoders["wavlm"], folder,
                                   *overrides, *FAST)
                if NOT_DEBUG in args:
                    debug = args.index("--debug")
                    args = [arg for index, arg in enumerate(args)
                            if arg != NOT_DEBUG and not debug <= index < debug + 3]
                brain = run_recipe(brain_class, args, benchmark=benchmark_experiment)
            except Exception as error:
                trained[name] = error
                raise
            assert experiment_brain_class(folder) is brain_class
            self[name] = (folder, brain)
            return self[name]

    return Experiments()


@pytest.fixture(scope="session")
def test_clean(corpus, tmp_path_factory):
    """The corpus's test-clean split as the benchmark reads it."""
    from librispeech_prepare import prepare_librispeech

    folder = tmp_path_factory.mktemp("test_clean_csv")
    prepare_librispeech(corpus, str(folder), te_splits=["test-clean"])
    dataset = DynamicItemDataset.from_csv(str(folder / "test-clean.csv"),
                                          replacements={"data_root": corpus})
    dataset.add_dynamic_item(read_waveform, takes="wav", provides="sig")
    return dataset


def audio_paths(dataset):
    """ID -> audio path of a dataset."""
    with dataset.output_keys_as(["id", "wav"]):
        return {item["id"]: item["wav"] for item in dataset}


def benchmark_hypotheses(brain, dataset, lm_decoder=None):
    """ID -> words, as the five tests' timed pass decodes them (batches of 4, sorted)."""
    if lm_decoder is None and (brain, dataset) in GREEDY_HYPOTHESES:
        return GREEDY_HYPOTHESES[brain, dataset]
    with torch.inference_mode():
        ids, _, hypotheses, _, _ = transcribe_batches(
            brain, make_test_loader(dataset, 4), "cpu", "fp32", lm_decoder,
            collections.Counter())
    decoded = dict(zip(ids, (" ".join(words) for words in hypotheses), strict=True))
    if lm_decoder is None:
        GREEDY_HYPOTHESES[brain, dataset] = decoded
    return decoded


GREEDY_HYPOTHESES = {}  # (brain, dataset) -> greedy hypotheses, computed once


def run_transcribe(capsys, *args):
    """transcribe.py in this process: (exit status, {path: text}, stderr, paths in order).

    Only the lines with a tab are transcript lines: SpeechBrain's experiment logging,
    set up by the training runs of this process, also writes to stdout.
    """
    status = transcribe.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    lines = [line.split("\t", 1) for line in captured.out.splitlines() if "\t" in line]
    return status, {path: text for path, text in lines}, captured.err, [p for p, _ in lines]


def records_of(folder, test):
    with open(folder / "benchmark.json", encoding="utf-8") as records_file:
        return [record for record in json.load(records_file) if record["test"] == test]


@pytest.mark.parametrize("name", ["CL3", "2L", "EE"])
def test_transcribe_gives_the_benchmark_greedy_hypotheses(experiments, test_clean, capsys, name):
    folder, brain = experiments[name]
    paths = audio_paths(test_clean)
    expected = benchmark_hypotheses(brain, test_clean)
    list_file = folder / "test_list.txt"
    list_file.write_text("\n".join(paths.values()) + "\n")
    status, texts, _, order = run_transcribe(capsys, folder, list_file, "--batch_size", 3)
    assert status == 0
    assert order == list(paths.values())  # input order
    assert {utterance: texts[path] for utterance, path in paths.items()} == expected
    # ...and they are what the benchmark scored: same WER and error counts
    from speechbrain.utils.metric_stats import ErrorRateStats

    with test_clean.output_keys_as(["id", "wrd"]):
        references = {item["id"]: item["wrd"].split() for item in test_clean}
    stats = ErrorRateStats()
    ids = sorted(paths)
    stats.append(ids, [texts[paths[i]].split() for i in ids], [references[i] for i in ids])
    record = records_of(folder, "cpu_greedy")[-1]
    assert stats.summarize("error_rate") == pytest.approx(record["wer"], abs=1e-9)
    assert stats.summarize("insertions") == record["wer_details"]["insertions"]


def test_transcribe_with_lm_gives_the_benchmark_lm_hypotheses(experiments, test_clean, corpus,
                                                              capsys):
    folder, brain = experiments["CL3"]
    paths = audio_paths(test_clean)
    lm_path = os.path.join(corpus, "4-gram.arpa")
    settings = BenchmarkSettings(lm_path=lm_path, lm_beam_width=8, lm_decode_workers=1)
    with LMDecoder(brain.tokenizer, settings) as lm_decoder:
        expected = benchmark_hypotheses(brain, test_clean, lm_decoder)
    status, texts, _, _ = run_transcribe(capsys, folder / "inference", *paths.values(),
                                         "--lm", lm_path)
    assert status == 0
    assert {utterance: texts[path] for utterance, path in paths.items()} == expected
    assert records_of(folder, "cpu_lm")[-1]["lm"]["beam_width"] == 8


@pytest.mark.parametrize("name", ["CL3", "2L"])
def test_encoder_asr_loads_a_copied_folder_offline(experiments, test_clean, tmp_path, name):
    from speechbrain.inference.ASR import EncoderASR

    folder, brain = experiments[name]
    copied = tmp_path / "copied_model"
    shutil.copytree(folder / "inference", copied)  # the folder alone, anywhere
    asr = EncoderASR.from_hparams(source=str(copied), savedir=str(tmp_path / "savedir"))
    expected = benchmark_hypotheses(brain, test_clean)
    paths = audio_paths(test_clean)
    for utterance in sorted(paths)[:4]:
        assert asr.transcribe_file(paths[utterance]) == expected[utterance]
    card = (copied / "README.md").read_text()
    assert brain.experiment_tags()["name"] in card and "EncoderASR.from_hparams" in card
    record = records_of(folder, "cpu_greedy")[-1]
    assert f"{record['wer']:.2f}" in card
    assert json.loads((copied / "ssl_encoder" / "config.json").read_text())[
        "num_hidden_layers"] == (2 if name == "2L" else 3)


# A user's program loading a folder: the benchmark's modules (ptflops, the five tests) blocked.
LOAD_WITHOUT_THE_BENCHMARK = """
import json, sys
sys.modules["ptflops"] = None
sys.modules["ssl_ctc.benchmarking.five_tests"] = None
from speechbrain.inference.ASR import EncoderASR
source, savedir, audio = sys.argv[1:]
text = EncoderASR.from_hparams(source=source, savedir=savedir).transcribe_file(audio)
print(json.dumps({"text": text, "benchmarking": "ssl_ctc.benchmarking" in sys.modules}))
"""


def test_encoder_asr_loads_a_folder_without_the_benchmark(experiments, test_clean, tmp_path):
    folder, brain = experiments["CL3"]
    paths = audio_paths(test_clean)
    utterance = sorted(paths)[0]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_THE_BENCHMARK, str(folder / "inference"),
         str(tmp_path / "savedir"), paths[utterance]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    expected = benchmark_hypotheses(brain, test_clean)[utterance]
    assert child == {"text": expected, "benchmarking": False}


def test_early_exit_interface_keeps_criterion_and_threshold_as_keys(experiments, test_clean,
                                                                     tmp_path, capsys):
    from speechbrain.inference.interfaces import foreign_class

    folder, brain = experiments["EE"]
    paths = audio_paths(test_clean)
    first = sorted(paths)[:3]
    expected = benchmark_hypotheses(brain, test_clean)

    def load(**overrides):
        return foreign_class(source=str(folder / "inference"), savedir=str(tmp_path / "ee"),
                             pymodule_file="custom_interface.py", classname="EarlyExitASR",
                             overrides=overrides)

    asr = load()  # the setting the experiment was benchmarked with
    for utterance in first:
        text, exit_layer = asr.transcribe_file_with_exit(paths[utterance])
        assert text == expected[utterance] == asr.transcribe_file(paths[utterance])
        assert exit_layer in (2, 3)
    # threshold 0 never fires before the last exit; 10 nats always fires at the first
    asr.set_exit_criterion("entropy", threshold=0.0)
    assert {asr.transcribe_file_with_exit(paths[u])[1] for u in first} == {3}
    always = load(exit_threshold=10.0)  # a key of hyperparams.yaml
    assert {always.transcribe_file_with_exit(paths[u])[1] for u in first} == {2}


def test_inputs_folder_resampled_stereo_and_long_files(experiments, test_clean, tmp_path, capsys):
    folder, _ = experiments["2L"]
    paths = audio_paths(test_clean)
    first = sorted(paths)[:3]
    audio = tmp_path / "audio"
    audio.mkdir()
    mono, rate = soundfile.read(paths[first[0]], dtype="float32")
    soundfile.write(audio / "stereo_8k.wav", numpy.stack([mono[::2], mono[::2]], 1), rate // 2)
    soundfile.write(audio / "copy.ogg", mono, rate)
    joined = numpy.concatenate([soundfile.read(paths[u], dtype="float32")[0] for u in first])
    soundfile.write(audio / "long.flac", joined, rate)
    status, texts, errors, order = run_transcribe(
        capsys, folder, audio, "--window_seconds", len(joined) / rate / 2.5,
        "--overlap_seconds", 1.0)
    assert status == 0, errors
    assert [os.path.basename(path) for path in order] == ["copy.ogg", "long.flac",
                                                          "stereo_8k.wav"]
    assert "resampled from 8000 Hz to 16000 Hz" in errors and "mixed down to mono" in errors
    assert "cut into windows" in errors
    assert all(texts.values())


def test_windows_cover_a_long_file_once(experiments, test_clean):
    from ssl_ctc.inference.transcription import Transcriber, read_audio

    folder, _ = experiments["CL3"]
    paths = audio_paths(test_clean)
    waveform = torch.cat([read_audio(paths[u]) for u in sorted(paths)[:3]])
    whole = Transcriber(folder, window_seconds=100.0)
    windowed = Transcriber(folder, window_seconds=len(waveform) / 16000 / 2.5,
                           overlap_seconds=1.0)
    _, lengths, _ = whole.infer([waveform])
    assert abs(len(windowed.windowed_log_probs(waveform)) - int(lengths[0])) <= 1


def test_bad_inputs_are_named_and_the_others_transcribed(experiments, test_clean, tmp_path,
                                                       capsys):
    folder, _ = experiments["2L"]
    good = sorted(audio_paths(test_clean).values())[:2]
    not_audio = tmp_path / "notes.flac"
    not_audio.write_text("not audio")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, numpy.zeros(0, dtype="float32"), 16000)
    missing = tmp_path / "missing.wav"
    status, _, errors, order = run_transcribe(capsys, folder, good[0], missing, not_audio, empty,
                                              good[1])
    assert status == 1
    assert order == good
    assert f"{missing}: file not found" in errors
    assert f"{not_audio}: not a readable audio file" in errors
    assert f"{empty}: empty audio (0 samples)" in errors


def test_bad_model_folders_are_named(experiments, test_clean, tmp_path, capsys):
    folder, _ = experiments["2L"]
    good = sorted(audio_paths(test_clean).values())[:1]
    without_weights = tmp_path / "without_weights"
    shutil.copytree(folder / "inference", without_weights)
    os.remove(without_weights / "ssl.ckpt")
    status, texts, errors, _ = run_transcribe(capsys, without_weights, *good)
    assert status == 2 and not texts
    assert f"lacks ssl.ckpt (listed in '{without_weights / MANIFEST}')" in errors
    newer = tmp_path / "newer"
    shutil.copytree(folder / "inference", newer)
    manifest = json.loads((newer / MANIFEST).read_text())
    (newer / MANIFEST).write_text(json.dumps({**manifest,
                                              "format_version": INFERENCE_FORMAT_VERSION + 1}))
    status, _, errors, _ = run_transcribe(capsys, newer, *good)
    assert status == 2
    assert f"'{newer / MANIFEST}' has format_version {INFERENCE_FORMAT_VERSION + 1}" in errors
    older = tmp_path / "older"
    shutil.copytree(folder / "inference", older)
    (older / MANIFEST).write_text(json.dumps({**manifest,
                                              "format_version": INFERENCE_FORMAT_VERSION - 1}))
    status, _, errors, _ = run_transcribe(capsys, older, *good)
    assert status == 2
    assert "written by an older version" in errors and "python -m ssl_ctc.inference" in errors
    experiment_without_folder = tmp_path / "experiment"
    (experiment_without_folder / "save").mkdir(parents=True)
    status, _, errors, _ = run_transcribe(capsys, experiment_without_folder, *good)
    assert status == 2 and "python -m ssl_ctc.inference" in errors


def test_the_command_rewrites_the_folder_of_an_existing_experiment(experiments, tmp_path):
    from ssl_ctc.inference.__main__ import main

    folder, _ = experiments["2L"]
    written = tmp_path / "written_by_the_run"
    shutil.copytree(folder / "inference", written)
    assert main([str(folder)]) is None  # python -m ssl_ctc.inference <experiment>
    rewritten = folder / "inference"
    assert (rewritten / HPARAMS_FILE).read_text() == (written / HPARAMS_FILE).read_text()
    for name in json.loads((written / MANIFEST).read_text())["files"]:
        if name.endswith(".ckpt") and name != "tokenizer.ckpt":
            before = torch.load(written / name, weights_only=True)
            after = torch.load(rewritten / name, weights_only=True)
            assert before.keys() == after.keys()
            assert all(torch.equal(before[key], after[key]) for key in before), name


def test_the_brain_class_is_read_from_the_experiment_yaml(experiments, tmp_path):
    from ssl_ctc.inference.loading import experiment_brain_class, load_experiment_brain
    from ssl_ctc.layer_removal import LayerRemovalBrain

    folder, brain = experiments["2L"]
    copied = tmp_path / "experiment"
    shutil.copytree(folder, copied)
    os.remove(copied / "benchmark.json")  # the records no longer name the class: the YAML does
    loaded = load_experiment_brain(copied)
    assert type(loaded) is LayerRemovalBrain
    expected = brain.modules.state_dict()
    assert all(torch.equal(value.cpu(), expected[key].cpu())
               for key, value in loaded.modules.state_dict().items())
    # An experiment saved before the key existed: its records name the class
    hparams_file = copied / "hyperparams.yaml"
    hparams_file.write_text("".join(line for line in hparams_file.read_text().splitlines(True)
                                    if not line.startswith("brain_class:")))
    shutil.copy(folder / "benchmark.json", copied)
    assert experiment_brain_class(copied) is LayerRemovalBrain


def test_nothing_to_transcribe_is_an_error(experiments, tmp_path, capsys):
    """A folder with no audio it reads is named, exit status 2, before the model loads."""
    folder, _ = experiments["2L"]
    empty = tmp_path / "no_audio"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    status, texts, errors, _ = run_transcribe(capsys, folder, empty)
    assert status == 2 and not texts
    assert f"no audio file (.wav, .flac, .ogg, .mp3) in folder '{empty}'" in errors


def test_auto_precision_is_measured_and_checked_on_the_files(experiments, test_clean):
    """``--precision auto`` probes the files' first batch (it used to run fp32 untried)."""
    from ssl_ctc.cpu.machine import has_bf16_instructions
    from ssl_ctc.inference.transcription import Transcriber

    folder, _ = experiments["CL3"]
    transcriber = Transcriber(folder, precision="auto")
    results = transcriber.transcribe(sorted(audio_paths(test_clean).values())[:3])
    assert all(result.error is None for result in results)
    decision = transcriber.cpu_decision
    assert decision.requested_precision == "auto"
    assert "no probe" not in str(decision.measurements.get("auto", ""))
    if has_bf16_instructions():
        assert "output_error" in decision.check  # bf16 checked against fp32 on the files
        assert sorted(decision.measurements["probe_seconds"]) == ["bf16", "fp32"]
    else:
        assert decision.precision == "fp32"


def test_a_moved_experiment_is_read_from_its_own_files(experiments, test_clean, tmp_path, capsys):
    """``cp -a EXPERIMENT elsewhere``, the original deleted: re-export and transcribe still work."""
    from ssl_ctc.inference.__main__ import main
    from ssl_ctc.inference.loading import relocated_hparams

    folder, _ = experiments["2L"]
    original = tmp_path / "original"
    shutil.copytree(folder, original)
    saved = original / "hyperparams.yaml"
    saved.write_text(relocated_hparams(saved.read_text(), original))  # as if it had run there
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    shutil.rmtree(moved / "inference")
    assert main([str(moved)]) is None
    good = sorted(audio_paths(test_clean).values())[:2]
    status, texts, _, _ = run_transcribe(capsys, moved, *good)
    assert status == 0 and len(texts) == 2
    assert str(original) not in (moved / "inference" / "hyperparams.yaml").read_text()


def test_a_folder_loads_anywhere_with_the_installed_package(experiments, test_clean, tmp_path):
    """The recipe's package installed, the folder copied away, the repository off the path."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "librispeech_prepare.py", "ssl_ctc", "early_exiting"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(experiments["CL3"][0] / "inference", elsewhere / "CL3")
    utterance, audio = sorted(audio_paths(test_clean).items())[0]
    script = (
        "import importlib.util, ssl_ctc\n"
        "assert importlib.util.find_spec('transcribe') is None  # the checkout is off the path\n"
        "from speechbrain.inference.ASR import EncoderASR\n"
        "asr = EncoderASR.from_hparams(source='CL3', savedir='cache')\n"
        f"print(ssl_ctc.__file__)\nprint(asr.transcribe_file({str(audio)!r}))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    location, text = run.stdout.strip().splitlines()[-2:]
    assert location.startswith(str(site))
    assert text == benchmark_hypotheses(experiments["CL3"][1], test_clean)[utterance]
