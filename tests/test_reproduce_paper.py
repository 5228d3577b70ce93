"""reproduce_paper.py (the paper's grid in one command) and the paper comparison.

The driver runs two rows with --debug on a few utterances of the embedded corpus
and a tiny encoder; the comparison (ssl_ctc.benchmarking.paper) is checked on
hand-made summary rows.
"""

import doctest
import json
import os

import pytest
from conftest import EMBEDDED_CORPUS

import reproduce_paper
from ssl_ctc.benchmarking import grid, paper
from ssl_ctc.benchmarking.grid import parse_overrides
from ssl_ctc.experiments import driver, registry
from ssl_ctc.experiments.registry import (
    DEMO_PARTS,
    DOWNSAMPLING,
    EMBEDDED_GRID,
    EMBEDDED_OVERRIDES,
    GRID,
    Row,
    rows_named,
)

SD2 = "--downsampling_technique signal_downsampling --downsampling_factor 2"
TWO_ROWS = (Row("baseline", "baseline", DOWNSAMPLING, "--downsampling_factor 1"),
            Row("SD2", "SD", DOWNSAMPLING, SD2))
# The same grid with an override that fails on SD2 only.
BROKEN_SD2 = (TWO_ROWS[0], Row("SD2", "SD", DOWNSAMPLING, SD2 + " --downsampling_technique x"))


def debug_arguments(corpus, encoder, output_root, *extra):
    return ["--data_folder", corpus, "--output_root", str(output_root),
            "--ssl_hub", encoder, "--test_splits=[test-clean]", "--dnn_neurons", "32",
            "--debug", "--debug_batches", "2", "--benchmark_devices=[cpu]",
            "--lm_path", os.path.join(EMBEDDED_CORPUS, "4-gram.arpa"), "--lm_beam_width", "8",
            "--lm_decode_workers", "1", "--benchmark_mac_batches", "1",
            "--benchmark_warmup_batches", "1", "--num_workers", "0", *extra]


def test_driver_runs_resumes_reports_and_refuses(few_utterances_corpus, tiny_encoders,
                                                  tmp_path, capsys):
    root = tmp_path / "paper"
    arguments = debug_arguments(few_utterances_corpus, tiny_encoders["wavlm"], root)

    # a failing row is reported, the other one finishes, the exit status says so
    assert reproduce_paper.main(arguments, grid=BROKEN_SD2) == 1
    output = capsys.readouterr().out
    assert "baseline: finished" in output
    assert "| SD2 | failed (exit 1)" in output
    assert "1 of 2 rows finished" in output
    records = json.loads((root / "baseline" / "benchmark.json").read_text())
    assert {(record["test"], record["status"]) for record in records} >= {
        ("cpu_greedy", "ok"), ("cpu_lm", "ok"), ("macs", "ok")}
    assert (root / "paper_comparison.md").is_file()  # summarize --paper ran at the end
    assert (root / "logs" / "SD2.log").is_file()

    # --print-commands: only the unfinished row
    assert reproduce_paper.main(arguments + ["--print-commands"], grid=TWO_ROWS) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 1 and "--output_folder " + str(root / "SD2") in commands[0]

    # the second invocation skips the finished row and runs the other
    assert reproduce_paper.main(arguments, grid=TWO_ROWS) == 0
    output = capsys.readouterr().out
    assert "| baseline | finished earlier (skipped)" in output
    assert "| SD2 | finished |" in output
    assert "baseline: running" not in output
    comparison = (root / "paper_comparison.md").read_text()
    assert "| SD2 | 2 | 4.85 / " in comparison

    # another seed in the same folders: refused, naming row and key, nothing deleted
    with pytest.raises(SystemExit) as refused:
        reproduce_paper.main(arguments + ["--seed", "7"], grid=TWO_ROWS)
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "row baseline: --seed 7" in error and "row SD2: --seed 7" in error
    assert "1986" in error
    assert (root / "baseline" / "benchmark.json").is_file()


def test_unknown_row_and_missing_data_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as unknown:
        reproduce_paper.main(["--embedded", "--only", "SD,SD9", "--output_root", str(tmp_path)])
    assert unknown.value.code == 2
    error = capsys.readouterr().err
    assert "unknown row or group 'SD9'" in error and "valid rows: baseline, CL2" in error
    with pytest.raises(SystemExit) as missing:
        reproduce_paper.main(["--data_folder", str(tmp_path / "nowhere"), "--print-commands"])
    assert missing.value.code == 2
    assert "nowhere' does not exist" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing ran, nothing was written


def test_print_commands_of_the_paper_grid(tmp_path, capsys):
    corpus = tmp_path / "LibriSpeech"
    for split in ("train-clean-100", "dev-clean", "test-clean", "test-other"):
        (corpus / split).mkdir(parents=True)
    root = tmp_path / "paper"
    assert reproduce_paper.main(["--data_folder", str(corpus), "--output_root", str(root),
                                 "--print-commands", "--seed", "1987"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == len(GRID) == 19
    assert all("--seed 1987" in command and f"--data_folder {corpus}" in command
               for command in commands)
    cl4 = next(command for command in commands if f"{root}/CL4" in command)
    assert "--downsampling_technique convolutional --downsampling_factor 4" in cl4
    assert "--number_of_epochs 25" in cl4
    assert "layer_removal.py" in commands[10] and "--considered_layers 24" in commands[10]
    assert commands[-1].startswith(f"test -f {root}/EE-entropy/benchmark.json && ")
    assert "--test_only --exit_criterion similarity" in commands[-1]
    assert f"--save_folder {root}/EE-entropy/save" in commands[-1]
    assert not root.exists()


def test_teacher_distils_every_row_from_the_baseline_or_a_folder(tmp_path, capsys):
    """--teacher baseline: the baseline runs first, plain, and every other row waits for it and
    learns from it; --teacher FOLDER: no baseline row; a missing folder is refused."""
    corpus = tmp_path / "LibriSpeech"
    for split in ("train-clean-100", "dev-clean", "test-clean", "test-other"):
        (corpus / split).mkdir(parents=True)
    root = tmp_path / "paper_kd"
    common = ["--data_folder", str(corpus), "--output_root", str(root), "--print-commands"]
    assert reproduce_paper.main([*common, "--only", "SD2,EE-similarity", "--teacher",
                                 "baseline", "--distillation_weight", "0.3"]) == 0
    baseline, sd2, similarity = capsys.readouterr().out.strip().splitlines()
    assert f"--output_folder {root}/baseline" in baseline and "--teacher" not in baseline
    assert sd2.startswith(f"test -f {root}/baseline/benchmark.json && ")
    assert f"--teacher {root}/baseline" in sd2 and "--distillation_weight 0.3" in sd2
    assert similarity.startswith(f"test -f {root}/EE-entropy/benchmark.json && ")
    assert f"--teacher {root}/baseline" in similarity

    teacher = tmp_path / "finished_baseline"
    teacher.mkdir()
    assert reproduce_paper.main([*common, "--only", "baseline,CL", "--teacher",
                                 str(teacher)]) == 0
    captured = capsys.readouterr()
    commands = [line for line in captured.out.splitlines() if "--output_folder" in line]
    assert [command.split("--output_folder ")[1].split()[0] for command in commands] == [
        f"{root}/CL2", f"{root}/CL3", f"{root}/CL4"]
    assert all(f"--teacher {teacher}" in command for command in commands)
    assert "baseline row left out" in captured.out + captured.err
    with pytest.raises(SystemExit):
        reproduce_paper.main([*common, "--teacher", str(tmp_path / "nowhere")])
    assert "no such folder" in capsys.readouterr().err
    assert not root.exists()


def test_embedded_grid_rows():
    names = [row.name for row in EMBEDDED_GRID]
    assert names[-6:] == ["4L", "3L", "2L", "1L", "EE-entropy", "EE-similarity"]
    assert [row.name for row in grid.select_rows(GRID, "early_exit,baseline")] == [
        "baseline", "EE-entropy", "EE-similarity"]


def test_the_demo_runs_its_earlier_commands_through_the_driver(tmp_path):
    """``make demo``'s rows, planned by the driver, pass the very overrides of its earlier
    commands (``EMBEDDED_OVERRIDES``, then the row's own), so its numbers stay the same."""
    earlier = {"baseline": ["--downsampling_factor", "1"],
               "SD2": ["--downsampling_technique", "signal_downsampling",
                       "--downsampling_factor", "2"],
               "CL3": ["--downsampling_technique", "convolutional", "--downsampling_factor", "3"],
               "4L": ["--considered_layers", "4"], "2L": ["--considered_layers", "2"]}
    rows = rows_named(EMBEDDED_GRID, [name for part in DEMO_PARTS.values() for name in part])
    planned, _ = driver.plan(rows, rows, tmp_path, parse_overrides(EMBEDDED_OVERRIDES))
    for item in planned:
        if item.row.name in earlier:
            assert item.overrides == parse_overrides(
                ["--output_folder", str(tmp_path / item.row.name), *EMBEDDED_OVERRIDES,
                 *earlier[item.row.name]])
    assert "--benchmark_timed_passes" in EMBEDDED_OVERRIDES
    assert planned[-1].configurations == [("entropy", t) for t in (0.2, 0.05, 0.1, 0.4, 0.8)]
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_driver_doctests():
    for module in (reproduce_paper, grid, driver, registry):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def summary_row(name, strategy, wer, cpu_time_s, hooks, complete, baseline=False,
                setting="x1"):
    """A summary row as ``ssl_ctc.benchmarking.summary.summary_rows`` gives it."""
    return {"experiment": name, "name": name, "test_set": "test-clean", "strategy": strategy,
            "setting": setting, "cpu_precision": "fp32", "baseline": baseline, "wer": wer,
            "gpu_time_s": "skipped", "cpu_time_s": cpu_time_s, "wer_lm": wer - 1,
            "gpu_lm_time_s": "skipped", "cpu_lm_time_s": 2 * cpu_time_s,
            "gmacs_per_batch": complete, "gmacs_per_batch_module_hooks": hooks}


HAND_MADE_ROWS = [
    summary_row("No downsampling", "baseline", 10.0, 2.0, 0.6, 0.8, baseline=True),
    summary_row("SD2", "signal_downsampling", 12.0, 1.0, 0.3, 0.4, setting="x2"),
    summary_row("2L", "layer_removal", 15.0, 1.5, 0.4, 0.5, setting="2 L"),
    {**summary_row("SD2", "signal_downsampling", 1.0, 1.0, 1.0, 1.0), "test_set": "test-other"},
]


def test_comparison_ratios_to_each_own_baseline():
    table = paper.load_paper_results()
    comparison = {entry["name"]: entry for entry in
                  paper.compare_with_paper(HAND_MADE_ROWS, table)}
    assert list(comparison)[:10] == [row["name"] for row in table["rows"]]
    sd2 = comparison["SD2"]
    assert sd2["paper"]["wer"] == 4.85 and sd2["measured"]["wer"] == 12.0
    assert sd2["difference"]["wer"] == pytest.approx(12.0 - 4.85)
    assert sd2["paper_ratio"]["wer"] == pytest.approx(4.85 - 4.09)  # points
    assert sd2["measured_ratio"]["wer"] == pytest.approx(2.0)
    assert sd2["paper_ratio"]["cpu_time_s"] == pytest.approx(569 / 1121)
    assert sd2["measured_ratio"]["cpu_time_s"] == pytest.approx(0.5)
    # MACs on the paper's counting (module hooks), the complete count kept beside
    assert sd2["measured"]["gmacs_per_batch"] == 0.3 and sd2["complete_gmacs"] == 0.4
    assert sd2["measured_ratio"]["gmacs_per_batch"] == pytest.approx(0.5)
    assert sd2["measured_ratio"]["gpu_time_s"] is None  # skipped without a GPU
    assert comparison["CL3"]["measured"] is None  # not run
    layers = comparison["2L"]
    assert layers["paper"] is None and layers["factor"] == "2 L"
    assert layers["paper_ratio"]["cpu_time_s"] is None
    assert layers["measured_ratio"]["cpu_lm_time_s"] == pytest.approx(0.75)


def test_a_distilled_grid_stands_beside_the_papers_plain_rows():
    """``reproduce_paper.py --teacher``'s rows ("SD2 +KD") pair with the paper's rows of their
    plain names, and keep their own name; a plain and a distilled SD2 both appear."""
    distilled = {**summary_row("SD2 +KD", "signal_downsampling+distillation", 11.0, 1.0, 0.3,
                               0.4, setting="x2 KD"), "experiment": "kd/SD2"}
    comparison = paper.compare_with_paper(HAND_MADE_ROWS + [distilled], paper.load_paper_results())
    sd2 = [entry for entry in comparison if entry["name"].startswith("SD2")]
    assert [entry["measured"]["wer"] for entry in sd2] == [12.0, 11.0]
    assert sd2[1]["name"].startswith("SD2 +KD (kd/SD2")
    assert sd2[1]["paper"]["wer"] == 4.85 and sd2[1]["measured_ratio"]["wer"] == 1.0
    assert not any(entry["name"] == "SD2 +KD" and entry["paper"] is None for entry in comparison)


def test_comparison_markdown_and_pareto_plots(tmp_path):
    table = paper.load_paper_results()
    comparison = paper.compare_with_paper(HAND_MADE_ROWS, table)
    text = paper.comparison_markdown(comparison, table)
    assert table["source"] in text
    assert "| SD2 | 2 | 4.85 / 12.00 (+7.15) |" in text
    assert "| 192.97 / 0.300 (-192.67); complete 0.400 |" in text
    assert "| 2L | 2 L | not published / 15.00 |" in text
    assert "| CL3 | 3 | 5.47 / not run |" in text
    assert "| SD2 | 2 | 0.64x / – |" in text  # GPU tests skipped without a GPU
    assert "0.51x / 0.50x" in text and "+0.76 / +2.00" in text  # CPU s ratio, WER change
    assert "not published / 0.75x" in text  # 2L's CPU time against the measured baseline
    written = paper.plot_pareto(comparison, tmp_path)
    assert [path.name for path in written] == ["paper_pareto_wer_vs_cpu_time.png",
                                               "paper_pareto_wer_vs_macs.png"]
    assert all(path.stat().st_size > 10_000 for path in written)
