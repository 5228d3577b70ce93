"""Time transcribing a test split per runtime and precision: the table of docs/GUIDE.md "Deploy".

For each experiment (its graphs exported first when its inference folder has none:
``python -m ssl_ctc.inference export FOLDER --format onnx --int8``), each runtime and
precision (torch fp32 and int8 through the CPU path of ``transcribe.py``, ONNX Runtime
and OpenVINO on ``model.onnx`` and ``model.int8.onnx``; OpenVINO when installed) loads
a ``Transcriber``, transcribes the split once to warm up, then times ``--repeats``
whole passes (reading, batches of ``--batch_size``, greedy decoding) and keeps the
median. The WER is against the split's references. Prints a Markdown table with the
date, commit, machine (``lscpu`` model name), versions and the load average before
and after (a busy machine shows there).

Usage::

    python tools/deploy_timing.py results/demo/CL3 results/demo/2L --threads 2 --repeats 5
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from ssl_ctc.inference.deploy import ONNX_ENTRY, RUNTIME_PACKAGES  # noqa: E402
from ssl_ctc.inference.loading import find_inference_folder, read_manifest  # noqa: E402
from ssl_ctc.inference.onnx_export import (  # noqa: E402
    CHECK_DATA,
    export_inference_folder,
    word_error_rate,
)
from ssl_ctc.inference.transcription import Transcriber  # noqa: E402

CONFIGURATIONS = [("torch", "fp32"), ("torch", "int8"), ("onnxruntime", "fp32"),
                  ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]


def machine_facts():
    """Date, commit, CPU model name and package versions, for the table's heading."""
    def command(*args):
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else "?"

    model = next((line.split(":", 1)[1].strip() for line in command("lscpu").splitlines()
                  if line.startswith("Model name")), platform.processor() or "?")
    dirty = " (with uncommitted changes)" if command("git", "status", "--porcelain") else ""
    versions = {"torch": torch.__version__}
    for package in RUNTIME_PACKAGES.values():
        try:
            versions[package] = importlib.import_module(package).__version__.split("-")[0]
        except ImportError:
            versions[package] = "not installed"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": command("git", "rev-parse", "--short", "HEAD") + dirty,
            "machine": f"{model}, {os.cpu_count()} logical CPUs", "versions": versions}


def split_references(split_folder):
    """Audio paths (sorted) and utterance id -> reference words of a LibriSpeech-layout split."""
    references = {}
    for transcript in Path(split_folder).rglob("*.trans.txt"):
        for line in transcript.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utterance, _, words = line.partition(" ")
                references[utterance] = words.split()
    return sorted(str(path) for path in Path(split_folder).rglob("*.flac")), references


def time_configuration(folder, runtime, precision, paths, references, arguments):
    """One row: load seconds, median transcription seconds, WER; or why it did not run."""
    if runtime == "torch":
        torch.set_num_threads(arguments.threads)
    start = time.perf_counter()
    try:
        transcriber = Transcriber(folder, runtime=runtime, precision=precision,
                                  batch_size=arguments.batch_size, threads=arguments.threads)
    except Exception as error:  # a runtime not installed, no int8 graph: the row says so
        return {"error": f"{type(error).__name__}: {error}"}
    load = time.perf_counter() - start
    transcriber.transcribe(paths)  # warm-up (and, for torch int8, the CPU decision's checks)
    seconds = []
    for _ in range(arguments.repeats):
        start = time.perf_counter()
        results = transcriber.transcribe(paths)
        seconds.append(time.perf_counter() - start)
    ids = [Path(result.path).stem for result in results]
    return {"load_s": load, "median_s": statistics.median(seconds), "runs_s": seconds,
            "audio_s": sum(result.seconds for result in results),
            "wer": word_error_rate(ids, [result.words for result in results],
                                   [references[utterance] for utterance in ids])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="experiment or inference folders")
    parser.add_argument("--data", default=str(CHECK_DATA), help="LibriSpeech-layout split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    arguments = parser.parse_args(argv)
    facts = machine_facts()
    load_before = os.getloadavg()
    paths, references = split_references(arguments.data)
    rows = []
    for experiment in arguments.experiments:
        folder = find_inference_folder(experiment)
        if "int8" not in read_manifest(folder).get(ONNX_ENTRY, {}):
            export_inference_folder(folder, int8=True, check_data=arguments.data)
        for runtime, precision in CONFIGURATIONS:
            row = time_configuration(folder, runtime, precision, paths, references, arguments)
            rows.append({"experiment": experiment, "runtime": runtime, "precision": precision,
                         **row})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"{facts['date']}, commit {facts['commit']}, {facts['machine']}; "
          + ", ".join(f"{name} {version}" for name, version in facts["versions"].items()))
    print(f"{len(paths)} files of {arguments.data}, batches of {arguments.batch_size}, greedy, "
          f"{arguments.threads} threads, median of {arguments.repeats} passes after a warm-up; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| experiment | runtime | precision | load (s) | transcribe split (s) "
          "| speed-up vs torch fp32 | WER |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["experiment"], row["runtime"], row["precision"]]
        if "error" in row:
            print("| " + " | ".join(cells) + f" | - | {row['error'][:80]} | - | - |")
            continue
        baseline = next(other for other in rows if other["experiment"] == row["experiment"]
                        and (other["runtime"], other["precision"]) == ("torch", "fp32"))
        cells += [f"{row['load_s']:.2f}", f"{row['median_s']:.2f}",
                  f"{baseline['median_s'] / row['median_s']:.2f}x", f"{row['wer']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({**facts, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
