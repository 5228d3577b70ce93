"""Distillation on the embedded default: each fast variant fine-tuned plain and with a teacher.

The teacher is the demo baseline (the demo's overrides, ``EMBEDDED_OVERRIDES``, trained once);
each student row (``DISTILLATION_STUDENTS`` in ``ssl_ctc/experiments/registry.py``: SD2, CL3,
SD4, the encoder cut to 2 layers, early exit, and SD2, CL3 and SD4 with the CTC upsampling
that gives them the teacher's frame rate) is then fine-tuned twice with the same seed and
epochs, plain and with ``--teacher``, into ``<output_root>/<row>/{plain,kd}`` (with
``--no_cache_run``, SD2 also without the posterior cache, ``kd_nocache``: the teacher runs on
every batch). It prints the table (WER, CER, WER-LM on test-clean, MACs, training time), the
training-time overhead, and how well the teacher's posteriors survive the alignment to each
student's frame rate. A folder that already holds its results is kept.

Usage::

    python tools/run_distillation_demo.py          # 17 runs, 4 epochs a student: 12 min on 2 cores
    python tools/run_distillation_demo.py --rows SD2 --no_cache_run   # + the teacher per batch

Authors
 * Recipe team 2026
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from speechbrain.utils.metric_stats import ErrorRateStats  # noqa: E402

from ssl_ctc.ctc import greedy_decode, make_tokenizer  # noqa: E402
from ssl_ctc.distillation.checks import TEACHER_RECORD  # noqa: E402
from ssl_ctc.distillation.loss import frame_overlap_fractions, span_log_posteriors  # noqa: E402
from ssl_ctc.distillation.teacher import CACHE_FILE, load_cache  # noqa: E402
from ssl_ctc.experiments.registry import (  # noqa: E402
    BASELINE,
    DISTILLATION_STUDENTS,
    EMBEDDED_OVERRIDES,
)

# Student rows by name (the teacher is the demo's baseline, BASELINE).
ROWS = {row.name: row for row in DISTILLATION_STUDENTS}
# The YAMLs' defaults, spelled out (chosen on this demo: w 0.25, T 1 against 0.5 / 2 and 0.1 / 2).
DISTILLATION = ["--distillation_weight", "0.25", "--distillation_temperature", "1"]
# The row whose distilled run is repeated without the cache (the teacher's cost per batch).
NO_CACHE_ROW = "SD2"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) - ")


def with_epochs(overrides, epochs):
    """The overrides with ``--number_of_epochs`` set to ``epochs``.

    Example
    -------
    >>> with_epochs(["--number_of_epochs", "8", "--lr", "0.1"], 5)
    ['--number_of_epochs', '5', '--lr', '0.1']
    """
    position = overrides.index("--number_of_epochs")
    return [*overrides[:position + 1], str(epochs), *overrides[position + 2:]]


def train(script, hparams, output_folder, overrides):
    """Fine-tune and benchmark one experiment unless its folder already holds the results."""
    if os.path.isfile(os.path.join(output_folder, "benchmark.json")):
        print(f"{output_folder}: finished, kept", flush=True)
        return
    command = [sys.executable, script, hparams, "--output_folder", output_folder, *overrides]
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def training_seconds(output_folder):
    """Seconds from the start of the first epoch to the last end-of-epoch checkpoint, plus
    the teacher's preparation (loading, hashing, caching its posteriors), from ``log.txt``."""
    start = end = None
    preparation = 0.0
    with open(os.path.join(output_folder, "log.txt"), encoding="utf-8") as log:
        for line in log:
            stamp = LOG_TIME.match(line)
            if stamp is None:
                continue
            moment = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
            if "Going into epoch 1" in line:
                start = moment
            elif "Saved an end-of-epoch checkpoint" in line:
                end = moment
            ready = re.search(r"distilling from teacher .* ready in ([0-9.]+) s", line)
            if ready:
                preparation = float(ready.group(1))
    return (end - start).total_seconds() + preparation


def measured(output_folder):
    """WER, CER, WER-LM (test-clean) and GMACs per test batch of an experiment's latest records."""
    with open(os.path.join(output_folder, "benchmark.json"), encoding="utf-8") as records_file:
        records = [record for record in json.load(records_file)
                   if record.get("status") == "ok" and record.get("configured", True)]
    latest = {record["test"]: record for record in records}
    return {"wer": latest["cpu_greedy"]["wer"], "cer": latest["cpu_greedy"]["cer"],
            "wer_lm": latest["cpu_lm"]["wer"] if "cpu_lm" in latest else None,
            "gmacs": latest["macs"]["gmacs_per_batch"], "name": latest["cpu_greedy"]["name"]}


def alignment_cers(kd_folder):
    """Greedy CER (%) on the training set of the teacher's cached posteriors: on its own
    frames, and on the student's frames as the recipe aligns them (``span``: what the
    teacher emits within each student frame, the targets the student learns), as the
    mean of the teacher's posteriors over each student frame, and as the teacher frame
    nearest each student frame's centre (two alternatives)."""
    with open(os.path.join(kd_folder, "save", TEACHER_RECORD), encoding="utf-8") as record_file:
        record = json.load(record_file)
    cache = load_cache(os.path.join(kd_folder, "save", CACHE_FILE))["log_probs"]
    teacher_stride, student_stride = record["teacher_frame_stride"], record["student_frame_stride"]
    with open(os.path.join(kd_folder, "train.csv"), newline="", encoding="utf-8") as manifest:
        references = {row["ID"]: row["wrd"].split(" ") for row in csv.DictReader(manifest)}
    tokenizer = make_tokenizer()
    stats = {name: ErrorRateStats(split_tokens=True)
             for name in ("own", "span", "mean", "nearest")}
    for utterance, log_probs in cache.items():
        log_probs = log_probs[None].float()
        length = torch.tensor([log_probs.shape[1]])
        frames = max(1, int(round(log_probs.shape[1] * teacher_stride / student_stride)))
        centres = ((torch.arange(frames) + 0.5) * student_stride / teacher_stride).long()
        fractions = frame_overlap_fractions(frames, student_stride, length, log_probs.shape[1],
                                            teacher_stride)
        candidates = {
            "own": log_probs,
            "span": span_log_posteriors(log_probs, length, frames, student_stride,
                                        teacher_stride),
            "mean": torch.bmm(fractions / fractions.sum(-1, keepdim=True), log_probs.exp()).log(),
            "nearest": log_probs[:, centres.clamp(max=log_probs.shape[1] - 1)],
        }
        for name, candidate in candidates.items():
            hypothesis = greedy_decode(candidate, torch.tensor([candidate.shape[1]]), tokenizer)
            stats[name].append([utterance], hypothesis, [references[utterance]])
    return student_stride, {name: stat.summarize("error_rate") for name, stat in stats.items()}


def main():
    """Train the teacher once, each row plain and distilled, then print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=4, help="of every student (teacher: 8)")
    parser.add_argument("--no_cache_run", action="store_true",
                        help=f"also {NO_CACHE_ROW} distilled with --distillation_cache False")
    parser.add_argument("--output_root",
                        default=os.path.join(REPO, "results", "distillation_demo"))
    arguments = parser.parse_args()
    start = time.time()
    root = arguments.output_root
    teacher = os.path.join(root, "teacher")
    train(*BASELINE.recipe, teacher, [*EMBEDDED_OVERRIDES, *BASELINE.arguments()])
    student_overrides = with_epochs(EMBEDDED_OVERRIDES, arguments.epochs)
    runs = []
    for row in arguments.rows:
        script, hparams = ROWS[row].recipe
        overrides = ROWS[row].arguments()
        kd = [*overrides, "--teacher", teacher, *DISTILLATION]
        plans = [("plain", overrides), ("kd", kd)]
        if row == NO_CACHE_ROW and arguments.no_cache_run:
            plans.append(("kd_nocache", [*kd, "--distillation_cache", "False"]))
        for run_name, run_overrides in plans:
            folder = os.path.join(root, row, run_name)
            train(script, hparams, folder, [*student_overrides, *run_overrides])
            runs.append((row, run_name, folder))

    teacher_numbers = measured(teacher)
    lines = ["| row | run | name | WER | CER | WER-LM | GMACs per test batch | training (s) |",
             "|---|---|---|---|---|---|---|---|",
             f"| teacher | baseline, 8 epochs | {teacher_numbers['name']} | "
             f"{teacher_numbers['wer']:.2f} | {teacher_numbers['cer']:.2f} | "
             f"{teacher_numbers['wer_lm']:.2f} | {teacher_numbers['gmacs']:.3f} | "
             f"{training_seconds(teacher):.0f} |"]
    times = {}
    for row, run_name, folder in runs:
        numbers = measured(folder)
        times[row, run_name] = training_seconds(folder)
        wer_lm = "-" if numbers["wer_lm"] is None else f"{numbers['wer_lm']:.2f}"
        lines.append(f"| {row} | {run_name} | {numbers['name']} | {numbers['wer']:.2f} | "
                     f"{numbers['cer']:.2f} | {wer_lm} | {numbers['gmacs']:.3f} | "
                     f"{times[row, run_name]:.0f} |")
    print("\n" + "\n".join(lines))
    print("\nTraining-time overhead of distillation (log.txt: epochs + teacher preparation):")
    for row, run_name in times:
        if run_name != "plain":
            ratio = times[row, run_name] / times[row, "plain"]
            print(f"  {row} {run_name}: {times[row, run_name]:.0f} s vs {times[row, 'plain']:.0f}"
                  f" s plain: x{ratio:.2f}")
    print("\nTeacher targets on the student's frames, greedy CER (%) on the training set:")
    for row, run_name, folder in runs:
        if run_name == "kd":
            stride, cers = alignment_cers(folder)
            print(f"  {row} ({stride:g} samples per student frame): teacher's own frames "
                  f"{cers['own']:.2f}; span (the recipe's) {cers['span']:.2f}, mean "
                  f"{cers['mean']:.2f}, nearest frame {cers['nearest']:.2f}")
    print(f"\ndistillation demo finished in {time.time() - start:.0f} s; results in {root}")


if __name__ == "__main__":
    main()
