"""Tests of speed_benchmark.py: one --quick run end to end (tiny shapes), its records and
GMACs ratios and the command-line checks. No timing is asserted.

Usage
-----
    pytest tests/test_speed_benchmark.py      # ~1 min on 2 busy cores
"""

import json
import math
import statistics

import pytest
import torch

import speed_analysis.overheads
import speed_analysis.reference_workloads
import speed_benchmark
from speed_analysis.brains import VARIANTS
from speed_analysis.report import RESULTS_JSON

REPEATS = 2


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One in-process ``--quick`` run on one thread, and the speed.json it writes."""
    output_folder = tmp_path_factory.mktemp("speed")
    threads_before = torch.get_num_threads()
    results = speed_benchmark.main([
        "--quick", "--threads", "1", "--repeats", str(REPEATS),
        "--output_folder", str(output_folder),
    ])
    written = json.loads((output_folder / RESULTS_JSON).read_text())
    return {"results": results, "written": written, "threads_before": threads_before}


def rows_by_name(results):
    return {row["name"]: row for row in results["variants"]}


def test_writes_speed_json_with_every_variant(quick_run):
    written = quick_run["written"]
    assert [row["name"] for row in written["variants"]] == list(VARIANTS)
    assert written["settings"]["quick"] is True
    assert written["complete"] is True
    assert written["variants"] == json.loads(json.dumps(quick_run["results"]["variants"]))
    for row in written["variants"]:
        assert len(row["times_s"]) == REPEATS
        assert all(seconds > 0 for seconds in row["times_s"])
        assert row["gmacs"] > 0


def test_threads_restored(quick_run):
    assert torch.get_num_threads() == quick_run["threads_before"]
    assert quick_run["written"]["settings"]["threads"] == [1]


def test_gmacs_ratios_follow_the_strategies(quick_run):
    rows = rows_by_name(quick_run["results"])
    ratio = {name: row["gmacs_ratio"] for name, row in rows.items()}
    assert ratio["baseline"] == 1.0
    for halved in ("SD2", "AV2", "CL2"):
        assert 0.4 < ratio[halved] < 0.6, (halved, ratio[halved])
    assert ratio["CL3"] < ratio["CL2"]
    assert ratio["12L"] < ratio["18L"] < 1.0
    assert ratio["EE18"] == pytest.approx(ratio["18L"], rel=0.05)
    assert ratio["SD2+18L"] < min(ratio["SD2"], ratio["18L"])
    assert rows["18L"]["layers"] == rows["SD2+18L"]["layers"] == 18
    assert rows["12L"]["layers"] == 12
    assert rows["SD3"]["factor"] == 3


def test_variant_records_are_consistent(quick_run):
    rows = rows_by_name(quick_run["results"])
    baseline = rows["baseline"]
    assert baseline["time_ratio"] == 1.0 and baseline["ratio_gap"] == 0.0
    matmul_rate = quick_run["results"]["matmul"]["gmacs_per_s"]
    for row in rows.values():
        assert row["median_time_s"] == statistics.median(row["times_s"])
        assert len(row["cpu_times_s"]) == REPEATS
        assert row["cpu_time_ratio"] == pytest.approx(row["median_cpu_time_s"]
                                                      / baseline["median_cpu_time_s"])
        assert row["time_ratio"] == pytest.approx(row["median_time_s"]
                                                  / baseline["median_time_s"])
        assert row["gmacs_per_s"] == pytest.approx(row["gmacs"] / row["median_time_s"])
        assert row["fraction_of_matmul"] == pytest.approx(row["gmacs_per_s"] / matmul_rate)
        assert row["ratio_gap"] == pytest.approx(row["time_ratio"] / row["gmacs_ratio"] - 1)
        assert row["cpu_ratio_gap"] == pytest.approx(row["cpu_time_ratio"] / row["gmacs_ratio"]
                                                     - 1)
        has_downsampler = row["factor"] > 1
        assert (row["downsampler_share"] is not None) == has_downsampler, row["name"]


def test_matmul_and_front_end_records(quick_run):
    results = quick_run["results"]
    config = results["encoder_config"]
    rows = results["matmul"]["rows_by_samples"]
    samples = [batch["samples"] for batch in results["batches"]]
    per_row = speed_analysis.reference_workloads.layer_macs_per_row(config["hidden_size"],
                                                 config["intermediate_size"])
    assert results["matmul"]["macs"] == sum(rows[size] for size in samples) * per_row
    front_end = results["front_end"]
    assert 0 < front_end["share_of_baseline_gmacs"] < 1
    assert len(front_end["hf_conv_times_s"]) == REPEATS
    assert front_end["hf_conv_gmacs_per_s"] == pytest.approx(
        front_end["gmacs"] / front_end["hf_conv_median_time_s"])
    assert results["baseline_fraction_of_matmul"] == results["variants"][0]["fraction_of_matmul"]


def test_utterances_sorted_batched_by_four(quick_run):
    results = quick_run["results"]
    durations = results["durations_s"]
    assert durations == sorted(durations)
    assert [batch["utterances"] for batch in results["batches"]] == [4, 1]
    assert results["audio_seconds"] == pytest.approx(sum(durations))
    assert 0 <= results["padding_fraction"] < 0.5


def test_inference_path_and_lm_measured_in_the_same_run(quick_run):
    results = quick_run["results"]
    path, lm = results["inference_path"], results["lm"]
    assert len(path["bare_forward_times_s"]) == len(path["path_times_s"]) == REPEATS
    assert len(path["masked_forward_times_s"]) == REPEATS
    assert path["mask_overhead"] == pytest.approx(statistics.median(
        masked / bare for masked, bare in zip(path["masked_forward_times_s"],
                                              path["bare_forward_times_s"], strict=True)) - 1)
    assert path["overhead"] == pytest.approx(speed_analysis.overheads.paired_overhead(
        path["path_times_s"], path["bare_forward_times_s"]))
    assert len(lm["lm_times_s"]) == REPEATS
    assert lm["overhead"] == pytest.approx(speed_analysis.overheads.paired_overhead(
        lm["lm_times_s"], lm["greedy_times_s"]))
    assert (lm["beam_width"], lm["alpha"], lm["beta"]) == (100, 0.5, 1.0)  # the YAML's
    tests = [record["test"] for record in results["records"] if record["status"] == "ok"]
    assert tests.count("cpu_greedy") == tests.count("cpu_lm") == REPEATS
    for record in results["records"]:  # one precision field per record: what ran
        if record["test"] in ("cpu_greedy", "cpu_lm") and record["status"] == "ok":
            assert record["precision"] == "fp32" and "cpu_precision" not in record
    assert results["ctc_head"]["probe_blank_fraction"] == pytest.approx(0.7, abs=0.05)


def test_targets_cover_every_measure(quick_run):
    targets = quick_run["results"]["targets"]
    subjects = [row["subject"] for row in targets if row.get("kind") != "absolute"]
    assert subjects == [name for name in VARIANTS if name != "baseline"] + [
        "baseline", "inference path", "LM"]
    cpu_targets = {row["target"]: row for row in targets if row.get("kind") == "absolute"}
    assert sorted(cpu_targets) == sorted(
        ["fp32_path_speedup", "fp32_path_max_abs_diff", "fraction_of_best_fp32_matmul",
         "bf16_speedup", "int8_speedup", "test_share_of_row_speedup"])
    bf16_measured = quick_run["results"]["cpu_paths"]["bf16_instructions"]
    for row in cpu_targets.values():
        if row["target"] == "bf16_speedup" and not bf16_measured or row["value"] is None:
            assert row["value"] is None and row["met"] is None
            continue
        at_most = row["target"] == "fp32_path_max_abs_diff"
        assert row["met"] is (row["value"] <= row["limit"] if at_most
                              else row["value"] >= row["limit"])
    for row in targets:
        if row.get("kind") == "absolute":
            continue
        assert math.isfinite(row["value"])
        if row["target"] == "fraction_of_matmul":
            assert row["met"] is (row["value"] >= row["limit"])
        elif row["target"] == "time_ratio_vs_gmacs_ratio":
            assert row["met"] is (abs(row["value"]) <= row["limit"])
        else:
            assert row["met"] is (row["value"] <= row["limit"])


def test_cpu_paths_compared_side_by_side(quick_run):
    """Flags first, the HF path, int8, GEMM limits and ONNX Runtime in the same round-robin."""
    cpu_paths = quick_run["written"]["cpu_paths"]
    assert "flags" in cpu_paths["flags"] and cpu_paths["fp32_backend"] in ("aten", "onednn")
    rows = cpu_paths["rows"]
    for label in ("baseline", "baseline, HF path", "baseline int8", "matmul onednn",
                  "matmul int8"):
        assert rows[label]["median_time_s"] > 0, label
    assert cpu_paths["encoder_differences"]["fp32"]["max_abs_diff"] < 1e-4
    assert cpu_paths["encoder_differences"]["int8"]["relative_error"] < 0.2
    onnx = cpu_paths["onnx"]
    if "error" not in onnx:  # onnx and onnxruntime installed
        assert onnx["fp32"]["max_abs_log_prob_diff"] < 1e-2
        assert "baseline onnx fp32" in rows and "baseline onnx int8" in rows


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precision", "fp16"], "needs --device cuda"),
        (["--min_seconds", "5", "--max_seconds", "2"], "min_seconds"),
        (["--precision", "int8", "--device", "cuda"], "CPU only"),
    ],
)
def test_bad_arguments_fail_fast(argv, message, capsys):
    with pytest.raises(SystemExit):
        speed_benchmark.parse_arguments(argv)
    assert message in capsys.readouterr().err


def test_baseline_always_first_and_quick_defaults():
    arguments = speed_benchmark.parse_arguments(["--quick", "--variants", "18L", "SD2"])
    assert arguments.variants == ["baseline", "18L", "SD2"]
    assert arguments.num_utterances == speed_benchmark.QUICK_DEFAULTS["num_utterances"]
    assert speed_benchmark.parse_arguments(["--lm_path", "none"]).lm_path is None


def test_int8_run_measures_the_five_tests_path(tmp_path):
    """``--precision int8`` on CPU times the five tests' greedy test in int8 against Hugging
    Face's fp32 path (the tests' settings keep a GPU precision, fp32, that validates)."""
    results = speed_benchmark.main([
        "--quick", "--threads", "1", "--repeats", "1", "--precision", "int8", "--variants",
        "baseline", "--skip_onnx", "--lm_path", "none", "--output_folder", str(tmp_path)])
    path = results["inference_path"]
    assert path["precision"] == "int8" and path["speedup_vs_hugging_face_fp32"] > 0
    assert results["cpu_paths"]["fp32_path"] in ("recipe", "hugging_face")
