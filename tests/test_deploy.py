"""ONNX export of an inference folder and transcribe.py --runtime onnxruntime|openvino.

Three experiments on tiny random encoders, run once per session with ``--debug`` and
no benchmark: a learned downsampler with CTC upsampling (CL3), a layer-removal one (2L)
and an early-exit one (``--test_only``, only to be refused). Their random heads emit
long character strings, so equal greedy transcripts mean equal argmaxes on every frame.
The export checks itself on the embedded test split (45 utterances); the transcripts
are compared on the same split.
"""

import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy
import pytest
import soundfile
from conftest import EMBEDDED_CORPUS, REPO
from test_recipes_end_to_end import recipe_args

import transcribe
from ssl_ctc.inference.deploy import GRAPH_FILES, ONNX_ENTRY
from ssl_ctc.inference.loading import MANIFEST
from ssl_ctc.inference.onnx_export import INT8_MAX_WER_INCREASE, word_error_rate

TEST_SPLIT = Path(EMBEDDED_CORPUS) / "test-clean"
EXPERIMENTS = {
    "CL3": ("sig_down8000.yaml", "ssl_ctc.downsampling.DownsampledBrain",
            ["--downsampling_technique", "convolutional", "--downsampling_factor", "3"]),
    "2L": ("layer_removal.yaml", "ssl_ctc.layer_removal.LayerRemovalBrain",
           ["--considered_layers", "2", "--downsampling_factor", "1"]),
    "EE": (os.path.join("early_exiting", "early_exits.yaml"), "early_exiting.brain.EarlyExitBrain",
           ["--exit_layers=[2, 3]", "--test_only"]),
}
EXPORTED = ("CL3", "2L")


@pytest.fixture(scope="session")
def trained(tiny_encoders, tmp_path_factory):
    """Name -> experiment folder (its inference/ written at the end of the run)."""
    from ssl_ctc.imports import import_object
    from ssl_ctc.recipe import run_recipe

    root = tmp_path_factory.mktemp("deploy_experiments")
    folders = {}
    for name, (yaml_name, brain_name, overrides) in EXPERIMENTS.items():
        folders[name] = root / name
        run_recipe(import_object(brain_name), recipe_args(
            yaml_name, EMBEDDED_CORPUS, tiny_encoders["wavlm"], folders[name], *overrides,
            "--debug_epochs", "1"))
    return folders


@pytest.fixture(scope="session")
def exported(trained):
    """Name -> (inference folder, the export command's stdout): fp32 and int8 graphs.

    The output goes to a file, not capsys (function-scoped).
    """
    from ssl_ctc.inference.__main__ import main

    outputs = {}
    for name in EXPORTED:
        with_output = Path(trained[name]).parent / f"{name}_export.txt"
        with open(with_output, "w", encoding="utf-8") as output, redirect_stdout(output):
            assert main(["export", str(trained[name]), "--format", "onnx", "--int8"]) == 0
        outputs[name] = (trained[name] / "inference", with_output.read_text(encoding="utf-8"))
    return outputs


def audio_paths():
    """The embedded test split's audio files, sorted."""
    return sorted(str(path) for path in TEST_SPLIT.rglob("*.flac"))


def references():
    """Utterance id -> reference words of the embedded test split."""
    lines = [line.split(" ", 1) for transcript in TEST_SPLIT.rglob("*.trans.txt")
             for line in transcript.read_text().splitlines() if line.strip()]
    return {utterance: words.split() for utterance, words in lines}


def run_transcribe(capsys, *args):
    """transcribe.py in this process: (exit status, {path: text}, stderr)."""
    status = transcribe.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    lines = [line.split("\t", 1) for line in captured.out.splitlines() if "\t" in line]
    return status, dict(lines), captured.err


TORCH_TRANSCRIPTS = {}  # experiment -> {path: text}, computed once


def torch_transcripts(capsys, folder):
    if folder not in TORCH_TRANSCRIPTS:
        status, texts, errors = run_transcribe(capsys, folder, TEST_SPLIT, "--quiet")
        assert status == 0, errors
        TORCH_TRANSCRIPTS[folder] = texts
    return TORCH_TRANSCRIPTS[folder]


def wer(texts):
    """WER (%) of transcripts (path -> text) against the test split's references."""
    ids = sorted(texts, key=lambda path: Path(path).stem)
    expected = references()
    return word_error_rate([Path(path).stem for path in ids], [texts[path].split() for path in ids],
                           [expected[Path(path).stem] for path in ids])


@pytest.mark.parametrize("name", EXPORTED)
def test_export_checks_itself_and_records_the_graphs(exported, name):
    folder, output = exported[name]
    assert f"exported {GRAPH_FILES['fp32']}, {GRAPH_FILES['int8']} (opset 17)" in output
    assert "45 utterances in padded batches of 4" in output
    assert "0 of 45 greedy transcripts differ" in output and "exact lengths" in output
    entry = json.loads((folder / MANIFEST).read_text())[ONNX_ENTRY]
    assert {entry["fp32"], entry["int8"]} == set(GRAPH_FILES.values())
    assert all((folder / file_name).is_file() for file_name in GRAPH_FILES.values())
    fp32, int8 = entry["check"]["fp32"], entry["check"]["int8"]
    assert fp32["passed"] and fp32["max_abs_log_prob_diff"] <= fp32["tolerance"] == 1e-3
    assert fp32["transcripts_differing"] == 0 and fp32["lengths_equal"]
    assert int8["passed"] and int8["wer"] - int8["wer_torch"] <= INT8_MAX_WER_INCREASE
    card = (folder / "README.md").read_text()
    assert "## Exported graphs (ONNX)" in card and "| `model.int8.onnx` | int8 |" in card
    assert "--runtime onnxruntime" in card


@pytest.mark.parametrize("name", EXPORTED)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_onnxruntime_transcripts_equal_pytorch(exported, capsys, name, batch_size):
    folder, _ = exported[name]
    expected = torch_transcripts(capsys, folder)
    status, texts, errors = run_transcribe(capsys, folder, TEST_SPLIT, "--runtime", "onnxruntime",
                                           "--batch_size", batch_size)
    assert status == 0, errors
    assert "(onnxruntime, fp32, cpu" in errors
    assert texts == expected and len(texts) == 45 and any(texts.values())


@pytest.mark.parametrize("name", EXPORTED)
def test_int8_graph_within_its_wer_bound(exported, capsys, name):
    folder, _ = exported[name]
    expected = torch_transcripts(capsys, folder)
    status, texts, errors = run_transcribe(capsys, folder, TEST_SPLIT, "--runtime", "onnxruntime",
                                           "--precision", "int8", "--quiet")
    assert status == 0, errors
    # Dynamic int8 scales each activation over its whole batch: the batches sorted by
    # duration here are not the check's, so the WER is bounded, not the check's number.
    assert wer(texts) - wer(expected) <= INT8_MAX_WER_INCREASE


@pytest.mark.parametrize("name", EXPORTED)
def test_openvino_transcripts_equal_pytorch(exported, capsys, name):
    pytest.importorskip("openvino", reason="openvino is optional (pip install openvino)")
    folder, _ = exported[name]
    expected = torch_transcripts(capsys, folder)
    status, texts, errors = run_transcribe(capsys, folder, TEST_SPLIT, "--runtime", "openvino")
    assert status == 0, errors
    assert texts == expected
    status, int8_texts, errors = run_transcribe(capsys, folder, TEST_SPLIT, "--runtime",
                                                "openvino", "--precision", "int8")
    assert status == 0, errors
    assert wer(int8_texts) - wer(expected) <= INT8_MAX_WER_INCREASE


def test_long_files_are_windowed_on_the_exported_frame_grid(exported, tmp_path):
    from ssl_ctc.inference.transcription import Transcriber

    folder, _ = exported["CL3"]
    joined = numpy.concatenate([soundfile.read(path, dtype="float32")[0]
                                for path in audio_paths()[:3]])
    soundfile.write(tmp_path / "long.flac", joined, 16000)
    window = dict(window_seconds=len(joined) / 16000 / 2.5, overlap_seconds=1.0)
    torch_result, onnx_result = (
        Transcriber(folder, runtime=runtime, **window).transcribe([str(tmp_path / "long.flac")])[0]
        for runtime in ("torch", "onnxruntime"))
    assert onnx_result.words == torch_result.words and torch_result.words


def test_missing_graphs_old_exports_and_missing_runtimes_are_named(exported, capsys, tmp_path,
                                                                   monkeypatch):
    folder, _ = exported["2L"]
    audio = audio_paths()[0]
    export = "python -m ssl_ctc.inference export"

    def copy(name, edit=None):
        copied = tmp_path / name
        shutil.copytree(folder, copied)
        if edit is not None:
            manifest = json.loads((copied / MANIFEST).read_text())
            edit(manifest)
            (copied / MANIFEST).write_text(json.dumps(manifest))
        return copied

    def fails_with(model_folder, *messages, runtime="onnxruntime", precision="fp32"):
        status, texts, errors = run_transcribe(capsys, model_folder, audio, "--runtime", runtime,
                                               "--precision", precision)
        assert status == 2 and not texts
        for message in messages:
            assert message in errors, errors

    without_graph = copy("without_graph")
    os.remove(without_graph / "model.onnx")
    fails_with(without_graph, f"exported graph '{without_graph / 'model.onnx'}' not found",
               f"{export} {without_graph} --format onnx")
    never_exported = copy("never_exported", lambda manifest: manifest.pop(ONNX_ENTRY))
    fails_with(never_exported, f"inference folder '{never_exported}' has no exported graph",
               f"no 'onnx' entry in '{never_exported / MANIFEST}'", export)
    older_export = copy("older_export", lambda manifest: manifest[ONNX_ENTRY].update(
        export_version=0))
    fails_with(older_export, "exported by an older version of this recipe",
               f"'{older_export / MANIFEST}'", export)
    older_folder = copy("older_folder", lambda manifest: manifest.update(format_version=1))
    fails_with(older_folder, f"'{older_folder / MANIFEST}' has format_version 1",
               "python -m ssl_ctc.inference")
    fp32_only = copy("fp32_only", lambda manifest: manifest[ONNX_ENTRY].pop("int8"))
    fails_with(fp32_only, "has no int8 graph", f"{export} {fp32_only} --format onnx --int8",
               precision="int8")
    fails_with(folder, "--runtime onnxruntime runs the exported graph on the CPU in fp32 or int8",
               precision="bf16")
    for package in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
        fails_with(folder, f"--runtime {package} needs the Python package '{package}'",
                   f"pip install {package}", runtime=package)


def test_early_exit_export_is_refused(trained, capsys):
    from ssl_ctc.inference.__main__ import main

    assert main(["export", str(trained["EE"]), "--format", "onnx"]) == 1
    errors = capsys.readouterr().err
    assert "early_exiting.brain.EarlyExitBrain" in errors and "not exportable to ONNX" in errors
    assert "early exit" in errors and "--runtime torch" in errors
    assert not (trained["EE"] / "inference" / "model.onnx").exists()


def test_a_graph_failing_its_check_is_not_written(exported, capsys, tmp_path):
    from ssl_ctc.inference.__main__ import main

    folder, _ = exported["CL3"]
    copied = tmp_path / "copied"
    shutil.copytree(folder, copied)
    before = {path.name: path.read_bytes() for path in copied.iterdir() if path.is_file()}
    chapter = next(path for path in TEST_SPLIT.iterdir() if path.is_dir())  # a short check
    # No graph matches PyTorch bit for bit: a zero tolerance fails the fp32 check.
    assert main(["export", str(copied), "--tolerance", "0", "--check_data", str(chapter)]) == 1
    errors = capsys.readouterr().err
    assert f"not exported: the graph of '{copied}' fails its check" in errors
    assert "nothing written" in errors and "tolerance 0.0e+00" in errors
    assert {path.name: path.read_bytes() for path in copied.iterdir() if path.is_file()} == before
    assert not [path for path in copied.iterdir() if path.name.startswith(".onnx_export")]


def test_the_runtime_module_imports_no_training_code(exported):
    folder, _ = exported["CL3"]
    program = (
        "import json, sys, numpy\n"
        "from ssl_ctc.inference.deploy import load_exported_model\n"
        f"model, hparams, _ = load_exported_model({str(folder)!r}, 'onnxruntime')\n"
        "output = model.infer_batch(numpy.zeros((2, 16000), 'float32'), [1.0, 0.5])\n"
        "print(json.dumps({'lengths': output['lengths'].tolist(), 'loaded': [name for name in "
        "('transformers', 'ssl_ctc.brain', 'ssl_ctc.encoder', 'ssl_ctc.benchmarking', "
        "'benchmark', 'early_exiting') if name in sys.modules]}))\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["loaded"] == [] and child["lengths"][0] > child["lengths"][1] > 0
