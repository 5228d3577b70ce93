"""Tests of ssl_ctc.cpu: Hugging Face's outputs, classes restored, checks, records."""

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

from ssl_ctc.benchmarking.summary import precision_check_text
from ssl_ctc.cpu.attention import FastWavLMAttention
from ssl_ctc.cpu.check import MODULE_TOLERANCE, OUTPUT_TOLERANCE, relative_error
from ssl_ctc.cpu.decision import CpuChoices, cpu_inference, decide_cpu_inference
from ssl_ctc.cpu.front_end import FRONT_ENDS, use_matmul_front_end
from ssl_ctc.cpu.kernels import (
    INT8_IMPLEMENTATIONS,
    KERNELS,
    bf16_kernel,
    int8_implementation,
    int8_kernel,
    onednn_bf16_kernel,
    onednn_kernel,
    usable_backends,
)
from ssl_ctc.cpu.machine import has_bf16_instructions
from ssl_ctc.cpu.path import CpuInferencePath
from ssl_ctc.precision import autocast

REPO = Path(__file__).resolve().parents[1]

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "conv_dim": (32,) * 7, "feat_extract_norm": "layer",
         "do_stable_layer_norm": True}


def _model(config_class, model_class):
    torch.manual_seed(0)
    model = model_class(config_class(**SMALL)).eval()
    use_matmul_front_end(model)
    head = torch.nn.Linear(SMALL["hidden_size"], 31)
    return torch.nn.ModuleDict({"ssl": model, "head": head})


def _padded_batch():
    wavs = torch.randn(3, 8000)
    mask = torch.ones(3, 8000, dtype=torch.long)
    mask[1, 6000:] = 0
    mask[2, 3000:] = 0
    return wavs * mask, mask


def _forward(modules, wavs, mask):
    hidden = modules["ssl"](wavs, attention_mask=mask).last_hidden_state
    return modules["head"](hidden)


@pytest.mark.parametrize("classes", [(WavLMConfig, WavLMModel), (HubertConfig, HubertModel)])
@pytest.mark.parametrize("backend", ["aten", "onednn", "auto"])
def test_fp32_matches_hugging_face_on_padded_batches(classes, backend):
    modules = _model(*classes)
    wavs, mask = _padded_batch()
    keys = list(modules.state_dict())
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, "fp32", backend) as decision:
            fast = _forward(modules, wavs, mask)
            assert decision.precision == "fp32" and decision.backend in ("aten", "onednn")
    assert (fast - expected).abs().max() < 1e-4
    assert list(modules.state_dict()) == keys
    assert all(type(module) is not FastWavLMAttention for module in modules.modules())


def test_int8_close_and_bf16_close_on_wavlm():
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        for precision, tolerance in (("int8", 0.1), ("bf16", 0.1)):
            with cpu_inference(modules, precision) as decision:
                output = _forward(modules, wavs, mask).float()
            assert decision.precision == precision
            assert (output - expected).norm() / expected.norm() < tolerance


def test_auto_precision_is_fp32_without_bf16_instructions_and_recorded():
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    with torch.inference_mode(), cpu_inference(
            modules, "auto", probe=lambda: _forward(modules, wavs, mask)) as decision:
        _forward(modules, wavs, mask)
    record = decision.record()
    assert record["requested_precision"] == "auto" and "cpu_precision" not in record
    assert decision.precision in ("fp32", "bf16")
    if not has_bf16_instructions():
        assert decision.precision == "fp32"
    assert "flags" in record["cpu_flags"]


def test_gradients_and_training_keep_the_original_path():
    modules = _model(WavLMConfig, WavLMModel).train()
    wavs, mask = _padded_batch()
    with cpu_inference(modules, "int8"):
        loss = _forward(modules, wavs, mask).square().mean()
    loss.backward()
    assert modules["head"].weight.grad is not None


def test_unknown_names_fail_fast():
    with pytest.raises(ValueError, match="precision"):
        with cpu_inference(torch.nn.Linear(2, 2), "fp8"):
            pass
    with pytest.raises(ValueError, match="backend"):
        with cpu_inference(torch.nn.Linear(2, 2), "fp32", "cuda"):
            pass


def test_front_end_choice_is_measured_recorded_and_exact():
    """``auto`` picks the faster CNN front end, records it, and either gives the same outputs."""
    modules = _model(WavLMConfig, WavLMModel)
    front_end = modules["ssl"].feature_extractor
    wavs, mask = _padded_batch()
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, "fp32") as decision:
            chosen = decision.record()
            assert front_end.use_matmuls == (decision.front_end == "matmul")
        for name in FRONT_ENDS:
            with CpuInferencePath(modules, "onednn", front_end=name).applied():
                assert front_end.use_matmuls == (name == "matmul")
                torch.testing.assert_close(_forward(modules, wavs, mask), expected,
                                           atol=1e-4, rtol=1e-4)
    assert chosen["cpu_front_end"] in FRONT_ENDS
    assert sorted(chosen["cpu_choice_measurements"]["front_end_seconds"]) == sorted(FRONT_ENDS)
    assert front_end.use_matmuls and front_end.conv_kernels is None


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_front_end_convolutions_run_packed_kernels_in_fp32_only(precision, monkeypatch):
    """The matmul front end's products run the fp32 backend's packed kernel (fp32 and int8
    paths, whose front end stays fp32); under bf16 autocast they run ``F.linear``; each
    convolution is packed once, and nothing is left set after the path."""
    modules = _model(WavLMConfig, WavLMModel)
    front_end = modules["ssl"].feature_extractor
    wavs, mask = _padded_batch()
    packed = []

    def counting_onednn(linear):
        packed.append(linear.weight.data_ptr())
        return onednn_kernel(linear)

    monkeypatch.setitem(KERNELS, "onednn", counting_onednn)
    choices = CpuChoices("onednn", {precision: "matmul"})
    with torch.inference_mode():
        expected = front_end(wavs)
        for _ in range(2):
            with choices.path(modules, precision).applied(), autocast("cpu", precision):
                kernels = front_end.conv_kernels
                output = front_end(wavs)
    convs = [layer.conv.weight.data_ptr() for layer in front_end.conv_layers]
    if precision == "bf16":
        assert kernels is None
        assert relative_error(output, expected) < MODULE_TOLERANCE["bf16"]
    else:
        assert len(kernels) == len(front_end.conv_layers)
        assert [pointer for pointer in packed if pointer in convs] == convs  # once each
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    assert front_end.conv_kernels is None
    with pytest.raises(ValueError, match="front end"):
        CpuInferencePath(modules, "aten", front_end="conv")


def test_int8_decision_runs_its_front_end_on_the_measured_fp32_kernel():
    """``cpu_inference`` in int8 (the five tests) measures the fp32 kernel: the int8 path's fp32
    CNN front end runs it, not ``F.linear``."""
    modules = _model(WavLMConfig, WavLMModel)
    front_end = modules["ssl"].feature_extractor
    wavs, _ = _padded_batch()
    with torch.inference_mode(), cpu_inference(modules, "int8") as decision:
        kernels = front_end.conv_kernels
    rates = decision.measurements["fp32_backend_gmacs_per_s"]
    assert sorted(rates) == sorted(usable_backends("fp32"))
    assert decision.front_end in FRONT_ENDS
    assert (kernels is not None) == (decision.front_end == "matmul")


def test_no_front_end_recorded_without_a_matmul_front_end():
    modules = torch.nn.Sequential(torch.nn.Linear(8, 8))
    for backend in ("auto", "aten"):
        with torch.inference_mode(), cpu_inference(modules, "fp32", backend) as decision:
            pass
        assert decision.front_end is None and decision.record()["cpu_front_end"] is None
        assert "front_end_seconds" not in decision.measurements


def test_precisions_decided_together_run_what_each_decided_alone_runs():
    """The speed script decides its precisions together (``decide_cpu_inference``), the five
    tests one at a time (``cpu_inference``): the same kernels, check and fallbacks; one cache
    of packed weights for the precisions decided together."""
    modules = _model(WavLMConfig, WavLMModel)
    decided = decide_cpu_inference(modules, ["fp32", "int8"])
    choices = decided["fp32"].choices
    assert decided["int8"].choices is choices and choices.fp32_backend in ("aten", "onednn")
    assert sorted(choices.front_ends) == ["fp32", "int8"]
    assert choices.front_ends["fp32"] == choices.front_ends["int8"] in FRONT_ENDS
    assert decided["int8"].check["layers_checked"] > 0  # checked, as the five tests' int8
    wavs, mask = _padded_batch()
    with torch.inference_mode():
        for precision in ("fp32", "int8"):
            with cpu_inference(modules, precision, choices.fp32_backend) as decision:
                expected = _forward(modules, wavs, mask)
            assert decided[precision].backend == decision.backend
            assert decided[precision].fp32_layers == decision.fp32_layers
            with decided[precision].path(modules).applied():
                torch.testing.assert_close(_forward(modules, wavs, mask), expected)
        cached = len(choices.kernel_cache)
        with decided["int8"].path(modules).applied():
            pass
    assert cached == len(choices.kernel_cache) > 0


def _faulty_grouped_conv_under_bf16(monkeypatch):
    """Make bf16 grouped 1-D convolutions wrong, as oneDNN's are on some CPUs (WavLM's pos_conv)."""
    original = torch.nn.Conv1d._conv_forward

    def faulty(self, inputs, weight, bias):
        output = original(self, inputs, weight, bias)
        if torch.is_autocast_enabled("cpu") and self.groups > 1:
            return output.flip(-1) * 3
        return output

    monkeypatch.setattr(torch.nn.Conv1d, "_conv_forward", faulty)


def test_bf16_layer_with_a_wrong_kernel_runs_in_fp32_and_is_recorded(monkeypatch):
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    _faulty_grouped_conv_under_bf16(monkeypatch)
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            unchecked = _forward(modules, wavs, mask).float()
        with cpu_inference(modules, "bf16") as decision:
            checked = _forward(modules, wavs, mask).float()
    assert relative_error(unchecked, expected) > 0.2  # the fault shows without the check
    assert relative_error(checked, expected) < 0.05
    assert decision.precision == "bf16"
    assert list(decision.fallbacks) == ["ssl.encoder.pos_conv_embed.conv"]
    assert "bf16 kernel off by" in decision.fallbacks["ssl.encoder.pos_conv_embed.conv"]
    record = decision.record()
    assert record["cpu_fp32_fallbacks"] == decision.fallbacks
    assert record["cpu_precision_check"]["largest_layer_error"] > MODULE_TOLERANCE["bf16"]
    conv_precisions = record["cpu_precision_check"]["layer_precisions"]["Conv1d"]
    assert conv_precisions["fp32"] == 1 and conv_precisions["bf16"] >= 1
    summary_text = precision_check_text({**record, "precision": decision.precision})
    assert summary_text.startswith("bf16, output") or summary_text.startswith("bf16, layers")
    assert summary_text.endswith(f"in fp32: 1 of {sum(conv_precisions.values())} Conv1d")
    assert "forward" not in vars(modules["ssl"].encoder.pos_conv_embed.conv)  # restored


def test_int8_layer_with_a_wrong_kernel_runs_in_fp32(monkeypatch):
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()

    def faulty_int8(linear):
        kernel = int8_kernel(linear)
        return (lambda inputs: -kernel(inputs)) if linear.out_features == 31 else kernel

    monkeypatch.setitem(KERNELS, "int8", faulty_int8)
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, "int8") as decision:
            output = _forward(modules, wavs, mask)
    assert list(decision.fallbacks) == ["head"]
    assert relative_error(output, expected) < 0.1


def test_precision_whose_output_is_wrong_is_refused(monkeypatch):
    """Layers each right but the whole output wrong (here: the probe sees it): fp32 runs."""
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()

    def probe():
        output = _forward(modules, wavs, mask)
        return output.flip(-1) if torch.is_autocast_enabled("cpu") else output

    with torch.inference_mode(), cpu_inference(modules, "bf16", probe=probe) as decision:
        assert not torch.is_autocast_enabled("cpu")
    assert decision.precision == "fp32" and decision.requested_precision == "bf16"
    assert "output off by" in decision.fallbacks["model"]
    assert decision.check["output_error"] > OUTPUT_TOLERANCE["bf16"]


def test_check_passes_on_a_correct_kernel():
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    for precision in ("bf16", "int8"):
        with torch.inference_mode(), cpu_inference(
                modules, precision, probe=lambda: _forward(modules, wavs, mask)) as decision:
            pass
        assert decision.precision == precision and decision.fallbacks == {}
        assert decision.check["output_error"] <= OUTPUT_TOLERANCE[precision]
        assert decision.check["layers_checked"] > 0


@pytest.fixture
def fresh_kernel_choices():
    """The kernels usable here (``usable_backends``, ``int8_implementation``) probed
    again in the test, and again after it."""
    for choice in (usable_backends, int8_implementation):
        choice.cache_clear()
    yield
    for choice in (usable_backends, int8_implementation):
        choice.cache_clear()


@pytest.mark.parametrize("fault", ["missing operator", "wrong result"])
@pytest.mark.parametrize(("precision", "private", "public"),
                         [("fp32", "onednn", "aten"), ("bf16", "onednn_bf16", "bf16")])
def test_a_private_kernel_that_breaks_is_left_out(monkeypatch, fault, precision, private, public,
                                                  fresh_kernel_choices):
    """oneDNN's packed kernels use private torch operators: if they go, ``F.linear`` runs."""

    def broken_onednn(linear):
        if fault == "missing operator":
            raise AttributeError("no such operator: mkldnn._reorder_linear_weight")
        return lambda inputs: torch.zeros(*inputs.shape[:-1], linear.out_features)

    monkeypatch.setitem(KERNELS, private, broken_onednn)
    assert usable_backends(precision) == (public,)
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, precision) as decision:
            output = _forward(modules, wavs, mask).float()
    assert decision.backend == public
    assert sorted(decision.measurements[f"{precision}_backend_gmacs_per_s"]) == [public]
    assert relative_error(output, expected) < {"fp32": 1e-5, "bf16": OUTPUT_TOLERANCE["bf16"]}[
        precision]
    if precision == "fp32":
        with pytest.raises(ValueError, match="'onednn' does not work in torch"):
            with cpu_inference(modules, "fp32", "onednn"):
                pass




def test_int8_runs_torchao_where_the_quantized_engine_is_gone(monkeypatch,
                                                              fresh_kernel_choices):
    """The legacy quantized engine's operators removed (a future torch): int8 runs through
    torchao, within the int8 tolerance, and the record names it."""
    def removed(linear):
        raise AttributeError("'_OpNamespace' 'quantized' object has no attribute 'linear_dynamic'")

    monkeypatch.setitem(INT8_IMPLEMENTATIONS, "quantized_engine", removed)
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, "int8") as decision:
            output = _forward(modules, wavs, mask)
    assert decision.precision == "int8" and not decision.fallbacks
    assert decision.record()["cpu_int8_implementation"] == "torchao"
    assert relative_error(output, expected) < OUTPUT_TOLERANCE["int8"]


def test_int8_refused_with_a_clear_message_where_no_implementation_works(monkeypatch,
                                                                         fresh_kernel_choices):
    def broken(linear):
        return lambda inputs: torch.zeros(*inputs.shape[:-1], linear.out_features)

    for name in INT8_IMPLEMENTATIONS:
        monkeypatch.setitem(INT8_IMPLEMENTATIONS, name, broken)
    with pytest.raises(RuntimeError, match="no int8 kernel works in torch .*off by 100.0%"):
        int8_implementation()


def test_bf16_linears_run_their_kernel_and_a_wrong_one_runs_in_fp32(monkeypatch):
    """Under bf16 the linear layers run the bf16 kernel chosen here (weights cast once); one
    whose kernel is wrong on this CPU is checked out and runs in fp32, and the output stays
    right."""
    modules = _model(WavLMConfig, WavLMModel)
    wavs, mask = _padded_batch()
    calls = collections.Counter()

    def counting(factory):
        def counting_kernel(linear):
            kernel = factory(linear)

            def run(inputs):
                calls[linear.out_features] += 1
                output = kernel(inputs)
                return -output if linear.out_features == 31 else output  # the head's is wrong

            return run

        return counting_kernel

    for name, factory in (("bf16", bf16_kernel), ("onednn_bf16", onednn_bf16_kernel)):
        monkeypatch.setitem(KERNELS, name, counting(factory))
    with torch.inference_mode():
        expected = _forward(modules, wavs, mask)
        with cpu_inference(modules, "bf16") as decision:
            calls.clear()  # the check's calls
            output = _forward(modules, wavs, mask).float()
    assert decision.precision == "bf16" and list(decision.fallbacks) == ["head"]
    assert calls[SMALL["intermediate_size"]] > 0 and calls[31] == 0
    assert relative_error(output, expected) < OUTPUT_TOLERANCE["bf16"]


MALLOC_PROBE = """
import ctypes, json, sys
import torch
# The library and the entry points, imported: malloc untouched.
import benchmark, ssl_ctc.benchmarking.five_tests, transcribe
from ssl_ctc.cpu.allocator import allocator_in_use, use_allocator
from ssl_ctc.cpu.decision import cpu_inference

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
if mallinfo2 is None:
    print(json.dumps(None)); sys.exit()
mallinfo2.restype = MallInfo2

def mmapped_by_a_large_tensor():
    before = mallinfo2().hblkhd
    large = torch.ones(16 << 20)  # 64 MiB, above glibc's largest mmap threshold
    return mallinfo2().hblkhd - before >= 16 << 20

modules = torch.nn.Sequential(torch.nn.Linear(8, 8))
with torch.inference_mode(), cpu_inference(modules, "fp32") as decision:
    library = mmapped_by_a_large_tensor(), decision.record()["cpu_allocator"]
chosen = use_allocator(sys.argv[1])
with torch.inference_mode(), cpu_inference(modules, "fp32") as decision:
    program = mmapped_by_a_large_tensor(), decision.record()["cpu_allocator"]
print(json.dumps({"library": library, "program": program, "chosen": chosen}))
"""


def _malloc_probe(setting):
    """``MALLOC_PROBE`` in a fresh process (malloc settings are the process's)."""
    completed = subprocess.run([sys.executable, "-c", MALLOC_PROBE, setting], cwd=REPO,
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.splitlines()[-1])


def test_library_leaves_malloc_alone_and_the_program_may_opt_in():
    """Importing the library and running ``cpu_inference`` leave glibc's malloc as it was (a
    64 MB tensor is mmap'd); ``use_allocator("keep_freed")``, a program's choice, serves it
    from the heap (no fresh pages that every forward would fault in again), and the decision's
    record says which allocator ran each time."""
    probe = _malloc_probe("keep_freed")
    if probe is None:
        pytest.skip("not glibc 2.33 or later (no mallinfo2)")
    assert probe["library"] == [True, probe["library"][1]]
    assert probe["library"][1].endswith("its defaults")
    assert probe["program"][0] is False
    assert "freed memory kept" in probe["program"][1] == probe["chosen"]


def test_system_allocator_setting_changes_nothing():
    """``use_allocator("system")`` leaves malloc as the process started with it."""
    probe = _malloc_probe("system")
    if probe is None:
        pytest.skip("not glibc 2.33 or later (no mallinfo2)")
    assert probe["program"][0] is True and probe["program"][1].endswith("its defaults")


@pytest.mark.parametrize(("library", "name"), [
    ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
    ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "tcmalloc")])
def test_preloaded_allocator_is_named_and_kept(library, name):
    """An allocator preloaded for the whole process (the ecosystem's way) is what the records
    name, and ``keep_freed`` leaves it as it is (where the Debian package is installed)."""
    if not Path(library).is_file():
        pytest.skip(f"{library} not installed")
    completed = subprocess.run(
        [sys.executable, "-c", "from ssl_ctc.cpu.allocator import use_allocator; "
         "print(use_allocator('keep_freed'))"], cwd=REPO, capture_output=True, text=True,
        check=True, env={**os.environ, "LD_PRELOAD": library})
    assert completed.stdout.strip() == f"{name} (preloaded)"


def test_allocator_left_alone_without_glibc(monkeypatch):
    """Another C library: nothing is changed, and the record says so."""
    import ctypes

    from ssl_ctc.cpu import allocator

    class OtherLibc:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", lambda name: OtherLibc())
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() == "the C library's own (not glibc): unchanged"
    finally:
        allocator.keep_freed_memory.cache_clear()


PEAK_PROBE = """
import json
import torch
from ssl_ctc.benchmarking.measurement import PeakMemory
from ssl_ctc.cpu.allocator import use_allocator

use_allocator("keep_freed")
freed = torch.ones(64 << 20)  # 256 MiB, freed below: kept by the allocator
del freed
with PeakMemory("cpu") as memory:
    block = torch.ones(64 << 20)
print(json.dumps([memory.kind, memory.peak_mb]))
"""


def test_peak_memory_counts_memory_the_allocator_kept():
    """With freed memory kept (in a fresh process: it is the process's setting), a block
    reusing 256 MiB freed earlier still shows it in its peak: ``PeakMemory`` gives the kept
    memory back first."""
    completed = subprocess.run([sys.executable, "-c", PEAK_PROBE], cwd=REPO,
                               capture_output=True, text=True, check=True)
    kind, peak_mb = json.loads(completed.stdout.splitlines()[-1])
    if kind != "process_rss_peak_above_start":
        pytest.skip(f"peak memory measured as {kind}")
    assert peak_mb > 200


def test_cpu_decisions_decide_once_per_model_until_its_weights_change(monkeypatch):
    """``CpuDecisions`` measures the kernels once per model, precision and backend; an in-place
    update of a weight (an optimizer step, ``load_state_dict``) makes a new decision, another
    model gets its own; without ``decisions`` every block decides anew."""
    from ssl_ctc.cpu import decision as cpu_decision

    decided = []
    decide = cpu_decision._decide

    def counting(*args, **kwargs):
        decided.extend(args[1])
        return decide(*args, **kwargs)

    monkeypatch.setattr(cpu_decision, "_decide", counting)
    kept = cpu_decision.CpuDecisions()
    model, other = (torch.nn.Sequential(torch.nn.Linear(8, 8)) for _ in range(2))
    inputs = torch.randn(3, 8)
    with torch.inference_mode():
        for _ in range(2):
            with cpu_inference(model, "fp32", decisions=kept) as decision:
                output = model(inputs)
        assert decided == ["fp32"] and decision.reused and decision.record()["cpu_plan_reused"]
        with cpu_inference(model, "int8", decisions=kept):
            pass
        with cpu_inference(other, "fp32", decisions=kept):
            pass
        assert decided == ["fp32", "int8", "fp32"]
    with torch.no_grad():
        model[0].weight.mul_(2)
    with torch.inference_mode(), cpu_inference(model, "fp32", decisions=kept) as decision:
        doubled = model(inputs)
    assert not decision.reused and decided[-1] == "fp32" and len(decided) == 4
    assert not torch.allclose(doubled, output)  # the new weights ran, not stale packed ones
    with torch.inference_mode(), cpu_inference(model, "fp32") as decision:
        pass
    assert len(decided) == 5 and decision.setup_time_s > 0


def test_fp32_runs_hugging_face_layers_where_the_whole_model_measured_faster(monkeypatch):
    """Where the whole model on the recipe's path measured slower on the probe than on
    Hugging Face's own layers (``choose_path``), fp32 runs those, and the record says so;
    elsewhere the recipe's kernels run."""
    from ssl_ctc.cpu import decision as cpu_decision

    model = WavLMModel(WavLMConfig(**SMALL))
    use_matmul_front_end(model)
    model.eval()
    wavs = torch.randn(2, 4000)
    for winner in ("hugging_face", "recipe"):
        monkeypatch.setattr(cpu_decision, "choose_path",
                            lambda modules, path, probe, winner=winner: (winner, {winner: 0.1}))
        with torch.inference_mode(), cpu_inference(model, "fp32",
                                                   probe=lambda: model(wavs)) as decision:
            attention = type(model.encoder.layers[0].attention).__name__
            output = model(wavs).last_hidden_state
        record = decision.record()
        if winner == "hugging_face":
            assert attention == "WavLMAttention"
            assert (record["cpu_backend"], record["cpu_front_end"]) == ("hugging_face",) * 2
        else:
            assert attention == "FastWavLMAttention" and record["cpu_backend"] != "hugging_face"
        assert record["cpu_choice_measurements"]["path_seconds"] == {winner: 0.1}
        with torch.inference_mode():
            expected = model(wavs).last_hidden_state
        assert torch.allclose(output, expected, atol=1e-4)


def test_choose_path_measures_both_paths():
    """``choose_path`` times the whole forward on the recipe's path and on Hugging Face's."""
    from ssl_ctc.cpu.path import PATHS, choose_path

    model = WavLMModel(WavLMConfig(**SMALL))
    wavs = torch.randn(1, 4000)
    path, seconds = choose_path(model, CpuInferencePath(model, "aten"), lambda: model(wavs))
    assert path in PATHS and set(seconds) == set(PATHS) and all(s > 0 for s in seconds.values())
