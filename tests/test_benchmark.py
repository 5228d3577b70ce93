"""Tests of the benchmark: the five tests' records, MAC counting, LM decoding,
settings validation and the summary (``benchmark.py summarize``).

Usage
-----
    pytest tests/test_benchmark.py              # all, ~1 min on 2 cores
    pytest tests/test_benchmark.py -m "not slow"  # without the WavLM-Large MAC count
"""

import collections
import contextlib
import csv
import importlib.metadata
import json
import os
import shutil
import sys

import pytest
import torch
from benchmark_fixtures import (
    TinyBrain,
    make_test_dataset,
    synthetic_waveform,
    write_arpa,
)
from transformers import WavLMConfig, WavLMModel

import benchmark
import ssl_ctc.lm_decoding
from ssl_ctc.benchmarking import five_tests
from ssl_ctc.benchmarking import macs as mac_counting
from ssl_ctc.benchmarking import records as benchmark_records
from ssl_ctc.benchmarking import settings as benchmark_settings
from ssl_ctc.benchmarking import summary as benchmark_summary
from ssl_ctc.cpu.machine import available_cpu_cores
from ssl_ctc.ctc import make_tokenizer

TAGS = {"name": "Tiny", "strategy": "baseline", "factor": 1, "layers": 2, "baseline": True}


# ---------------------------------------------------------------- five tests
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Runs the five tests twice into one folder: with an LM (2 decoding
    workers), then without an LM, on CPU only, in bf16 with one thread."""
    folder = tmp_path_factory.mktemp("experiment")
    arpa = write_arpa(folder / "lm.arpa")
    brain = TinyBrain()
    brain.modules.train()
    brain.modules.encoder.feature_extractor.eval()  # e.g. a frozen CNN
    datasets = {"test-tiny": make_test_dataset()}
    with_lm = benchmark_settings.BenchmarkSettings(
        batch_size=2, warmup_batches=1, mac_batches=2, lm_path=str(arpa), lm_beam_width=8
    )
    without_lm = benchmark_settings.BenchmarkSettings(
        batch_size=2,
        warmup_batches=1,
        mac_batches=1,
        cpu_threads=1,
        devices=["cpu"],
        cpu_precision="bf16",
    )
    threads_before = torch.get_num_threads()
    first = five_tests.run_five_tests(brain, datasets, with_lm, TAGS, folder)
    second = five_tests.run_five_tests(brain, datasets, without_lm, TAGS, folder)
    return {
        "folder": folder,
        "brain": brain,
        "first": first,
        "second": second,
        "threads_before": threads_before,
    }


def by_test(records):
    return {record["test"]: record for record in records}


def test_five_records_per_test_set_in_order(two_runs):
    for records in (two_runs["first"], two_runs["second"]):
        assert [record["test"] for record in records] == [
            "gpu_greedy",
            "gpu_lm",
            "cpu_greedy",
            "cpu_lm",
            "macs",
        ]
        assert all(record["test_set"] == "test-tiny" for record in records)
        assert all({key: record[key] for key in TAGS} == TAGS for record in records)


def test_greedy_tests_run_before_the_lm_workers_start(tmp_path, monkeypatch):
    """Forked LM workers slow the parent's forward (copy-on-write): none live during greedy."""
    live_decoders, seen = [], []
    decoder_class = ssl_ctc.lm_decoding.LMDecoder
    decoder_init, decoder_close = decoder_class.__init__, decoder_class.close
    run_test = five_tests.run_inference_test

    def counting_init(self, *args):
        decoder_init(self, *args)
        live_decoders.append(self)

    def counting_close(self):
        decoder_close(self)
        live_decoders.remove(self)

    def recording_test(brain, dataset, settings, device, lm_decoder, cpu_decisions):
        seen.append((lm_decoder is not None, len(live_decoders)))
        return run_test(brain, dataset, settings, device, lm_decoder, cpu_decisions)

    monkeypatch.setattr(ssl_ctc.lm_decoding.LMDecoder, "__init__", counting_init)
    monkeypatch.setattr(ssl_ctc.lm_decoding.LMDecoder, "close", counting_close)
    monkeypatch.setattr(five_tests, "run_inference_test", recording_test)
    settings = benchmark_settings.BenchmarkSettings(
        batch_size=2, warmup_batches=1, mac_batches=1, devices=["cpu"],
        lm_path=str(write_arpa(tmp_path / "lm.arpa")), lm_beam_width=8,
    )
    datasets = {"a": make_test_dataset((0.6, 0.9)), "b": make_test_dataset((0.7, 1.1))}
    records = five_tests.run_five_tests(TinyBrain(), datasets, settings, TAGS, tmp_path)
    assert seen == [(False, 0), (False, 0), (True, 1), (True, 1)]
    assert not live_decoders
    assert [(record["test_set"], record["test"]) for record in records] == [
        (test_set, test) for test_set in ("a", "b")
        for test in ("gpu_greedy", "gpu_lm", "cpu_greedy", "cpu_lm", "macs")
    ]


def _event_log(monkeypatch, brain):
    """Log every forward (its padded length) and every call into the C library's allocator."""
    from ssl_ctc.cpu import allocator

    events = []
    glibc, infer_batch = allocator._glibc, brain.infer_batch

    def logged_glibc():
        events.append(("allocator", None))
        return glibc()

    def logged_infer_batch(wavs, wav_lens):
        events.append(("forward", wavs.shape[1]))
        return infer_batch(wavs, wav_lens)

    monkeypatch.setattr(allocator, "_glibc", logged_glibc)
    monkeypatch.setattr(brain, "infer_batch", logged_infer_batch)
    return events


@pytest.mark.parametrize("uses_lm", [False, True])
def test_no_allocator_call_between_the_warm_up_and_the_timed_passes(tmp_path, monkeypatch,
                                                                    uses_lm):
    """The memory pass (the longest batch) comes first, then the warm-up on the longest batches,
    then every timed pass: no allocator call (``malloc_trim``, ``mallopt``) after the warm-up
    starts, and the timed passes' batches are no longer than the warm-up's."""
    from ssl_ctc.benchmarking.passes import run_inference_test
    from ssl_ctc.lm_decoding import LMDecoder

    brain = TinyBrain()
    settings = benchmark_settings.BenchmarkSettings(
        batch_size=2, warmup_batches=2, timed_passes=3, devices=["cpu"],
        lm_path=str(write_arpa(tmp_path / "lm.arpa")), lm_beam_width=8, lm_decode_workers=1)
    dataset = make_test_dataset()  # 3 batches of 2
    with LMDecoder(brain.tokenizer, settings) if uses_lm else contextlib.nullcontext() as lm:
        events = _event_log(monkeypatch, brain)
        measures = run_inference_test(brain, dataset, settings, "cpu", lm)
    last_allocator_call = max(index for index, (kind, _) in enumerate(events)
                              if kind == "allocator" and index < len(events) - 1
                              and any(later == "forward" for later, _ in events[index:]))
    forwards_after = [length for kind, length in events[last_allocator_call:]
                      if kind == "forward"]
    memory_pass, warm_up, timed = forwards_after[0], forwards_after[1:3], forwards_after[3:]
    assert len(timed) == 3 * 3  # every timed pass over every batch, nothing in between
    assert max(timed) == memory_pass == max(warm_up)  # the warm-up ran the longest batches
    assert sorted(warm_up) == sorted(set(timed))[-2:]
    assert len(measures["timed_pass_times_s"]) == 3
    assert measures["total_time_s"] == sorted(measures["timed_pass_times_s"])[1]  # the median


def test_cpu_decision_made_once_per_model(two_runs):
    """The kernel choice and the reduced-precision check run at the first CPU test of a run
    (their time recorded apart), the later tests reuse the decision."""
    for records in (two_runs["first"], two_runs["second"]):
        greedy, with_lm = by_test(records)["cpu_greedy"], by_test(records)["cpu_lm"]
        assert greedy["cpu_plan_reused"] is False and greedy["cpu_plan_setup_time_s"] > 0
        if with_lm["status"] == "ok":
            assert with_lm["cpu_plan_reused"] is True
            assert with_lm["cpu_plan_setup_time_s"] == greedy["cpu_plan_setup_time_s"]


def test_gpu_tests_skipped_without_cuda_or_when_not_listed(two_runs):
    listed, not_listed = by_test(two_runs["first"]), by_test(two_runs["second"])
    for test in ("gpu_greedy", "gpu_lm"):
        if torch.cuda.is_available():
            assert listed[test]["status"] == "ok"
        else:
            assert listed[test]["status"] == "skipped"
            assert listed[test]["reason"] == "no CUDA device"
            assert "total_time_s" not in listed[test]
        assert not_listed[test]["status"] == "skipped"
        assert not_listed[test]["reason"] == "cuda not in benchmark_devices"


def test_lm_records_present_exactly_when_lm_configured(two_runs):
    with_lm, without_lm = by_test(two_runs["first"]), by_test(two_runs["second"])
    assert with_lm["cpu_lm"]["status"] == "ok"
    assert with_lm["cpu_lm"]["lm"]["alpha"] == 0.5
    assert with_lm["cpu_lm"]["lm"]["beta"] == 1.0
    assert with_lm["cpu_lm"]["lm"]["beam_width"] == 8
    assert with_lm["cpu_lm"]["lm"]["decode_workers"] == 2
    assert with_lm["cpu_lm"]["lm"]["load_time_s"] > 0
    assert with_lm["cpu_lm"]["lm_beam_search_time_s"] > 0
    assert without_lm["cpu_lm"]["status"] == "skipped"
    assert "lm_path" in without_lm["cpu_lm"]["reason"]
    assert "wer" not in without_lm["cpu_lm"]
    assert with_lm["cpu_greedy"]["lm"] is None


def test_timed_records_are_consistent(two_runs):
    dataset = make_test_dataset()
    with dataset.output_keys_as(["duration", "wrd"]):
        dataset_seconds = sum(item["duration"] for item in dataset)
        reference_words = sum(len(item["wrd"].split()) for item in dataset)
    for records in (two_runs["first"], two_runs["second"]):
        for record in records:
            if record["status"] != "ok" or record["test"] == "macs":
                continue
            total = record["total_time_s"]
            assert record["num_utterances"] == 6
            assert record["num_batches"] == 3
            assert record["audio_seconds"] == pytest.approx(dataset_seconds)
            assert (
                total >= record["forward_time_s"] + record["decode_time_s"] + record["data_time_s"]
            )
            assert record["forward_time_s"] > 0
            assert record["real_time_factor"] == pytest.approx(total / record["audio_seconds"])
            assert record["inverse_real_time_factor"] == pytest.approx(
                record["audio_seconds"] / total
            )
            assert record["ms_per_utterance"] == pytest.approx(1000 * total / 6)
            assert record["peak_memory_mb"] >= 0
            assert record["peak_memory_kind"] == "process_rss_peak_above_start"
            assert record["resident_memory_before_mb"] > record["peak_memory_mb"]
            assert 0 <= record["cer"] and 0 <= record["wer"]
            assert record["wer_details"]["num_scored_tokens"] == reference_words
            assert record["sorting"] == "ascending duration"
            assert record["batch_size"] == 2
            assert record["device_name"]
            assert record["versions"]["torch"] == importlib.metadata.version("torch")
            assert record["command"] == " ".join(sys.argv)
            exit_layers = record["extras"]["exit_layers"]
            assert sum(count for _, count in exit_layers["distribution"]) == 6
            assert 1 <= exit_layers["mean"] <= 2


def test_precision_recorded(two_runs):
    assert by_test(two_runs["first"])["cpu_greedy"]["precision"] == "fp32"
    assert by_test(two_runs["second"])["cpu_greedy"]["precision"] == "bf16"
    assert by_test(two_runs["second"])["macs"]["precision"] == "fp32"


def test_threads_recorded_and_restored(two_runs):
    assert by_test(two_runs["second"])["cpu_greedy"]["threads"] == 1
    assert by_test(two_runs["second"])["cpu_greedy"]["threads_source"] == "benchmark_cpu_threads"
    first = by_test(two_runs["first"])["cpu_greedy"]
    assert (first["threads"], first["threads_source"]) == (available_cpu_cores(), "cpu_affinity")
    assert torch.get_num_threads() == two_runs["threads_before"]


def test_cpu_threads_default_to_the_usable_cores_not_torchs_count(tmp_path):
    """After torchrun (OMP_NUM_THREADS=1) the CPU tests still use every core they may."""
    settings = benchmark_settings.BenchmarkSettings(devices=["cpu"], mac_batches=1,
                                                           warmup_batches=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = five_tests.run_five_tests(TinyBrain(), {"t": make_test_dataset((0.6, 0.8))},
                                           settings, TAGS, tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    assert by_test(records)["cpu_greedy"]["threads"] == len(os.sched_getaffinity(0))


def test_peak_memory_is_the_tests_own(tmp_path):
    """Memory resident before the test (model loading, training) is not its peak."""
    resident = torch.ones(64, 2**20)  # 256 MiB, touched
    settings = benchmark_settings.BenchmarkSettings(devices=["cpu"], mac_batches=1,
                                                           warmup_batches=0)
    records = five_tests.run_five_tests(TinyBrain(), {"t": make_test_dataset((0.6, 0.8))},
                                       settings, TAGS, tmp_path)
    greedy = by_test(records)["cpu_greedy"]
    assert greedy["resident_memory_before_mb"] > 256 > 64 > greedy["peak_memory_mb"]
    del resident


def test_tags_may_not_replace_record_fields(tmp_path):
    settings = benchmark_settings.BenchmarkSettings(devices=["cpu"], mac_batches=1)
    with pytest.raises(ValueError, match=r"tags \['device'\] clash"):
        five_tests.run_five_tests(
            TinyBrain(), {"t": make_test_dataset()}, settings, {"device": "mine"}, tmp_path
        )
    assert not (tmp_path / "benchmark.json").exists()


def test_brain_state_restored(two_runs):
    brain = two_runs["brain"]
    assert brain.device == "cpu"
    assert brain.modules.training and brain.modules.head.training
    assert not brain.modules.encoder.feature_extractor.training


def test_mac_record(two_runs):
    record = by_test(two_runs["first"])["macs"]
    parameters = sum(p.numel() for p in two_runs["brain"].modules.parameters())
    assert record["status"] == "ok" and record["device"] == "cpu"
    assert record["num_batches"] == 2 and record["num_utterances"] == 4
    assert record["parameters"] == parameters
    assert 0 < record["gmacs_per_batch_module_hooks"] < record["gmacs_per_batch"]
    assert record["gmacs_per_audio_second"] == pytest.approx(
        record["gmacs_per_batch"] * record["num_batches"] / record["audio_seconds"]
    )
    assert by_test(two_runs["second"])["macs"]["num_batches"] == 1


def test_appending_keeps_both_runs_in_json_and_csv(two_runs):
    folder = two_runs["folder"]
    stored = json.loads((folder / "benchmark.json").read_text())
    assert stored == json.loads(json.dumps(two_runs["first"] + two_runs["second"]))
    with open(folder / "benchmark.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    assert [row["test"] for row in rows] == [record["test"] for record in stored]
    assert rows[2]["name"] == "Tiny" and rows[2]["lm.alpha"] == ""
    assert not list(folder.glob(".benchmark*"))  # no temporary file left


# ---------------------------------------------------------------- MACs
def padded_batch(*seconds):
    """Waveforms padded to the longest, with relative lengths."""
    waveforms = [synthetic_waveform(duration, seed) for seed, duration in enumerate(seconds)]
    longest = max(len(waveform) for waveform in waveforms)
    wavs = torch.stack([torch.nn.functional.pad(w, (0, longest - len(w))) for w in waveforms])
    return wavs, torch.tensor([len(w) / longest for w in waveforms])


def attention_product_macs(config, frames):
    """Q K^T and A V of every layer, for one utterance."""
    return 2 * config.num_hidden_layers * frames * frames * config.hidden_size


def test_macs_linear_in_length_outside_attention():
    brain = TinyBrain()
    brain.modules.eval()
    config = brain.modules.encoder.config
    counts = {}
    for seconds in (1, 2, 4):
        wavs, wav_lens = padded_batch(seconds)
        macs, output = mac_counting.count_macs(brain.infer_batch, wavs, wav_lens)
        counts[seconds] = macs - attention_product_macs(config, output["log_probs"].shape[1])
    assert counts[2] == pytest.approx(2 * counts[1], rel=0.02)
    assert counts[4] == pytest.approx(2 * counts[2], rel=0.02)


def test_macs_fall_with_downsampling_and_count_the_downsampler():
    wavs, wav_lens = padded_batch(2, 2)
    full_rate, downsampled = TinyBrain(), TinyBrain(downsampling_factor=2)
    full_rate.modules.eval()
    downsampled.modules.eval()
    full_macs, full_output = mac_counting.count_macs(full_rate.infer_batch, wavs, wav_lens)
    down_macs, down_output = mac_counting.count_macs(downsampled.infer_batch, wavs, wav_lens)
    encoder_only_macs, _ = mac_counting.count_macs(full_rate.infer_batch, wavs[:, ::2], wav_lens)
    assert down_output["log_probs"].shape[1] == pytest.approx(
        full_output["log_probs"].shape[1] / 2, abs=1
    )
    assert 0.35 < down_macs / full_macs < 0.6
    assert down_macs > encoder_only_macs  # the resampler's convolution is counted


def wavlm_macs_formula(config, samples):
    """MACs of a WavLM encoder for one utterance, from its config: CNN, feature
    projection, positional convolution, then per layer the attention
    projections, feed-forward, gated relative position bias and attention
    products. Bias additions count one MAC per output, as ptflops does."""
    macs, length, channels = 0, samples, 1
    for dim, kernel, stride in zip(
        config.conv_dim, config.conv_kernel, config.conv_stride, strict=True
    ):
        length = (length - kernel) // stride + 1
        macs += length * dim * (channels * kernel + config.conv_bias)
        channels = dim
    frames, hidden, ffn = length, config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    macs += frames * hidden * (channels + 1)
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    positional_frames = frames + 2 * (kernel // 2) - kernel + 1
    macs += positional_frames * hidden * (hidden // groups * kernel + 1)
    projections = 4 * frames * hidden * (hidden + 1)
    feed_forward = frames * ffn * (hidden + 1) + frames * hidden * (ffn + 1)
    gate = frames * heads * 8 * (hidden // heads)
    products = 2 * frames * frames * hidden
    return macs + config.num_hidden_layers * (projections + feed_forward + gate + products)


@pytest.mark.slow
def test_wavlm_large_macs_match_formula():
    config = WavLMConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        apply_spec_augment=False,
    )
    model = WavLMModel(config).eval()

    def infer_batch(wavs, wav_lens):
        return {"log_probs": model(wavs).last_hidden_state}

    samples = 10 * 16000
    wavs = synthetic_waveform(10, seed=0)[None]
    macs, _ = mac_counting.count_macs(infer_batch, wavs, torch.ones(1))
    assert macs == pytest.approx(wavlm_macs_formula(config, samples), rel=0.01)


# ---------------------------------------------------------------- LM decoding
def spelled_log_probs(tokenizer, text, frames_per_label=3, filler="<blank>"):
    """Peaked log-probs spelling text (a blank between letters)."""
    indices = []
    for character in text:
        indices += [tokenizer.lab2ind[character]] * frames_per_label
        indices.append(tokenizer.lab2ind[filler])
    one_hot = torch.nn.functional.one_hot(torch.tensor(indices), len(tokenizer.ind2lab))
    return (one_hot.float() * 0.98 + 0.02 / len(tokenizer.ind2lab)).log()


@pytest.fixture(scope="module")
def lm_decoder(tmp_path_factory):
    arpa = write_arpa(tmp_path_factory.mktemp("lm") / "lm.arpa")
    settings = benchmark_settings.BenchmarkSettings(lm_path=str(arpa), lm_decode_workers=2)
    with ssl_ctc.lm_decoding.LMDecoder(make_tokenizer(), settings) as decoder:
        yield decoder


def test_lm_text_does_not_depend_on_batch_composition(lm_decoder):
    tokenizer = make_tokenizer()
    short = spelled_log_probs(tokenizer, "THE CAT SAT")
    long = spelled_log_probs(tokenizer, "THE DOG SAT ON THE MAT A DOG RAN HOME HELLO WORLD")
    # Padding frames that spell letters, as a real encoder's padded outputs may.
    letters = spelled_log_probs(tokenizer, "ZZQ" * 20)[: len(long) - len(short)]
    padded_short = torch.cat([short, letters])
    batch = torch.stack([padded_short, long])
    lengths = torch.tensor([len(short), len(long)])

    alone = lm_decoder.decode(short[None], torch.tensor([len(short)]))
    in_batch = lm_decoder.decode(batch, lengths)
    untrimmed = lm_decoder.decode(batch, torch.tensor([len(long), len(long)]))

    assert alone == [["THE", "CAT", "SAT"]]
    assert in_batch[0] == alone[0]
    assert in_batch[1] == "THE DOG SAT ON THE MAT A DOG RAN HOME HELLO WORLD".split()
    assert untrimmed[0] != alone[0]  # the padding would have changed the text


def test_lm_never_emits_bos_eos(lm_decoder):
    tokenizer = make_tokenizer()
    log_probs = spelled_log_probs(tokenizer, "HELLO WORLD", filler="<eos>")
    words = lm_decoder.decode(log_probs[None], torch.tensor([len(log_probs)]))[0]
    assert not any("<" in word or ">" in word for word in words)


def test_lm_loaded_once_per_process(tmp_path, monkeypatch):
    """A threshold sweep opens an LM decoder per threshold: the LM is read only once."""
    builds = []
    build = ssl_ctc.lm_decoding._build_decoder
    monkeypatch.setattr(ssl_ctc.lm_decoding, "_build_decoder",
                        lambda *arguments: builds.append(arguments) or build(*arguments))
    monkeypatch.setattr(ssl_ctc.lm_decoding, "_loaded_decoders", {})
    settings = benchmark_settings.BenchmarkSettings(
        lm_path=str(write_arpa(tmp_path / "lm.arpa")), lm_decode_workers=2)
    decoders = []
    for _ in range(3):
        with ssl_ctc.lm_decoding.LMDecoder(make_tokenizer(), settings) as decoder:
            decoders.append(decoder.loaded_before)
    assert len(builds) == 1
    assert decoders == [False, True, True]


def test_pyctcdecode_labels_map_blank_and_drop_bos_eos():
    labels, kept_indices = ssl_ctc.lm_decoding.pyctcdecode_labels(make_tokenizer())
    assert labels[0] == "" and kept_indices[:2] == [0, 3]
    assert "<blank>" not in labels and "<bos>" not in labels and "<eos>" not in labels
    assert len(labels) == len(make_tokenizer().ind2lab) - 2


def test_lm_decoder_in_process_matches_pool(lm_decoder, tmp_path):
    tokenizer = make_tokenizer()
    log_probs = spelled_log_probs(tokenizer, "A DOG RAN HOME")
    settings = benchmark_settings.BenchmarkSettings(
        lm_path=str(write_arpa(tmp_path / "lm.arpa")), lm_decode_workers=1
    )
    lengths = torch.tensor([len(log_probs)])
    pooled = lm_decoder.decode(log_probs[None], lengths)
    with ssl_ctc.lm_decoding.LMDecoder(tokenizer, settings) as in_process:
        assert in_process.pool is None
        assert in_process.decode(log_probs[None], lengths) == pooled


# ---------------------------------------------------------------- settings
def test_from_hparams_reads_keys_and_defaults(tmp_path):
    settings = benchmark_settings.BenchmarkSettings.from_hparams(
        {
            "benchmark_batch_size": 8,
            "benchmark_devices": "cpu",
            "benchmark_mac_batches": 3,
            "lm_path": tmp_path / "lm.arpa",
            "lm_beam_width": 10,
            "unrelated_key": 1,
        }
    )
    assert settings.batch_size == 8 and settings.devices == ["cpu"]
    assert settings.mac_batches == 3 and settings.lm_beam_width == 10
    assert settings.lm_path == str(tmp_path / "lm.arpa")
    defaults = benchmark_settings.BenchmarkSettings.from_hparams({})
    assert defaults == benchmark_settings.BenchmarkSettings()
    assert (defaults.batch_size, defaults.devices, defaults.warmup_batches) == (
        4,
        ["cuda", "cpu"],
        2,
    )
    assert (defaults.lm_alpha, defaults.lm_beta, defaults.lm_beam_width) == (0.5, 1.0, 100)
    assert defaults.lm_path is None and defaults.lm_decode_workers == 2


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"lm_path": "missing/4-gram.arpa"}, FileNotFoundError, "lm_path: no such file"),
        ({"devices": ["cpu", "tpu"]}, ValueError, "benchmark_devices: unknown device 'tpu'"),
        ({"cpu_precision": "fp16"}, ValueError, "benchmark_cpu_precision"),
        ({"gpu_precision": "fp8"}, ValueError, "benchmark_gpu_precision"),
        ({"batch_size": 0}, ValueError, "benchmark_batch_size must be a positive integer, got 0"),
        ({"warmup_batches": -1}, ValueError, "benchmark_warmup_batches"),
        ({"timed_passes": 0}, ValueError, "benchmark_timed_passes must be a positive integer"),
        ({"cpu_allocator": "arena"}, ValueError, "cpu_allocator: unknown setting 'arena'"),
        ({"mac_batches": 0}, ValueError, "benchmark_mac_batches"),
        ({"lm_beam_width": 0}, ValueError, "lm_beam_width"),
        ({"lm_decode_workers": 0}, ValueError, "lm_decode_workers"),
        ({"lm_alpha": "high"}, ValueError, "lm_alpha"),
    ],
)
def test_validate_fails_fast(overrides, error, message):
    with pytest.raises(error, match=message):
        benchmark_settings.BenchmarkSettings(**overrides).validate()


def test_validate_binary_lm_needs_unigrams(tmp_path):
    binary = tmp_path / "4-gram.bin"
    binary.write_bytes(b"mmap lm")
    with pytest.raises(ValueError, match="lm_unigrams_path is needed"):
        benchmark_settings.BenchmarkSettings(lm_path=str(binary)).validate()
    with pytest.raises(FileNotFoundError, match="lm_unigrams_path"):
        benchmark_settings.BenchmarkSettings(
            lm_path=str(binary), lm_unigrams_path=str(tmp_path / "missing.txt")
        ).validate()


@pytest.mark.parametrize("package", ["kenlm", "pyctcdecode"])
def test_validate_missing_lm_package(tmp_path, monkeypatch, package):
    arpa = write_arpa(tmp_path / "lm.arpa")
    monkeypatch.setitem(sys.modules, package, None)  # makes the import fail
    with pytest.raises(ImportError, match=f"lm_path=.*needs the '{package}' package"):
        benchmark_settings.BenchmarkSettings(lm_path=str(arpa)).validate()


def test_validate_accepts_good_settings(tmp_path):
    arpa = write_arpa(tmp_path / "lm.arpa")
    benchmark_settings.BenchmarkSettings(
        devices=["cuda:1", "cpu"], cpu_precision="bf16", gpu_precision="fp16", lm_path=str(arpa)
    ).validate()


# ---------------------------------------------------------------- summary
def test_summarize_two_experiments(two_runs, tmp_path, capsys):
    results = tmp_path / "results"
    baseline_folder = results / "baseline" / "1986"
    baseline_folder.mkdir(parents=True)
    shutil.copy(two_runs["folder"] / "benchmark.json", baseline_folder)
    downsampled_tags = {"name": "SD2", "strategy": "downsampling", "factor": 2, "layers": 2}
    downsampled = []
    for record in json.loads((baseline_folder / "benchmark.json").read_text()):
        record = {key: value for key, value in record.items() if key not in TAGS}
        record.update(downsampled_tags)
        for field in ("total_time_s", "gmacs_per_batch", "gmacs_per_audio_second"):
            if field in record:
                record[field] /= 2
        downsampled.append(record)
    benchmark_records.append_records(downsampled, results / "SD2" / "1986")

    all_rows = benchmark_summary.summarize(results)

    # one row per experiment and CPU precision (the second run was in bf16)
    assert sorted((row["name"], row["cpu_precision"]) for row in all_rows) == [
        ("SD2", "bf16"), ("SD2", "fp32"), ("Tiny", "bf16"), ("Tiny", "fp32")]
    rows = [row for row in all_rows if row["cpu_precision"] == "fp32"]
    assert [row["name"] for row in rows] == ["Tiny", "SD2"]
    baseline, sd2 = rows
    assert baseline["baseline"] and not sd2["baseline"]
    assert sd2["setting"] == "x2"
    assert sd2["cpu_time_s"] == pytest.approx(baseline["cpu_time_s"] / 2)
    assert sd2["gmacs_per_batch"] == pytest.approx(baseline["gmacs_per_batch"] / 2)
    # The run with an LM is the latest measured CPU-LM record.
    assert isinstance(baseline["cpu_lm_time_s"], float)
    assert baseline["exit_layers_mean"] >= 1
    if not torch.cuda.is_available():
        assert baseline["gpu_time_s"] == "skipped"
    markdown = (results / "summary.md").read_text()
    assert markdown.splitlines()[0].startswith("| Name | Test set | Factor / layers | WER |")
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + len(all_rows)
    assert "Note: CPU times were measured on 1, 2 threads" in markdown  # bf16 ran on 1 thread
    with open(results / "summary.csv", newline="") as csv_file:
        assert len(list(csv.DictReader(csv_file))) == len(all_rows)
    for stem in ("wer_vs_cpu_time", "wer_vs_gmacs", "wer_lm_vs_cpu_lm_time", "wer_lm_vs_gmacs"):
        assert (results / f"{stem}_test-tiny.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| SD2 |" in printed
    if not torch.cuda.is_available():
        assert not (results / "wer_vs_gpu_time_test-tiny.png").exists()
        assert "No plot wer_vs_gpu_time (test-tiny)" in printed


def test_summarize_keeps_a_re_evaluation_at_another_batch_size_apart(two_runs, tmp_path,
                                                                       capsys):
    """``--test_only --benchmark_batch_size 8`` appends records: they get rows of their own."""
    records = json.loads((two_runs["folder"] / "benchmark.json").read_text())
    again = [{**record, "batch_size": 8, "timestamp": "9999",
              **({"gmacs_per_batch": record["gmacs_per_batch"] * 2}
                 if "gmacs_per_batch" in record else {})} for record in records]
    benchmark_records.append_records(records + again, tmp_path)
    rows = benchmark_summary.summarize(tmp_path)
    by_batch = collections.defaultdict(set)
    for row in rows:
        by_batch[row["batch_size"]].add(row["gmacs_per_batch"])
    assert sorted(by_batch) == [2, 8]
    assert max(by_batch[2]) * 2 == pytest.approx(min(by_batch[8]))  # never mixed in one row
    printed = capsys.readouterr().out
    assert "rows were measured at batch sizes 2, 8" in printed
    assert "| Batch |" in printed


def test_summarize_command_line(two_runs, tmp_path, capsys):
    shutil.copy(two_runs["folder"] / "benchmark.json", tmp_path)
    benchmark.main(["summarize", str(tmp_path)])
    assert "| Tiny |" in capsys.readouterr().out
    assert (tmp_path / "summary.md").exists()


def test_summarize_without_results_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark.json"):
        benchmark_summary.summarize(tmp_path)
