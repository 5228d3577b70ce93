"""MAC counting with ptflops: every ATen matrix product, and the paper's module-hook count.

Usage::

    macs, output = count_macs(brain.infer_batch, wavs, wav_lens)
"""

import contextlib
import io

import torch
from ptflops import get_model_complexity_info

from ssl_ctc.cpu.front_end import channels_first_front_ends


def _attention_product_macs(inputs, outputs):
    """MACs of a fused scaled-dot-product attention op: Q K^T and A V."""
    query, key, value = inputs[:3]
    return query.shape[:-1].numel() * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _baddbmm_macs(inputs, outputs):
    """MACs of aten.baddbmm (bias + batch1 @ batch2), the bias counted as in
    ptflops' addmm."""
    batch1, batch2 = inputs[1], inputs[2]
    return batch1.shape.numel() * batch2.shape[-1] + outputs[0].shape.numel()


def _aten_mac_formulas():
    """ATen ops that ptflops' table lacks, with their MAC formulas."""
    attention_ops = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    formulas = {
        getattr(torch.ops.aten, name): _attention_product_macs
        for name in attention_ops
        if hasattr(torch.ops.aten, name)
    }
    formulas[torch.ops.aten.baddbmm] = _baddbmm_macs
    return formulas


class _InferBatchModule(torch.nn.Module):
    """Presents ``brain.infer_batch`` to ptflops as a module returning the
    log-probabilities; keeps the whole output in ``last_output``.

    ``modules`` are registered as children only when module hooks must see
    them (ptflops' "pytorch" backend); the "aten" backend counts dispatched
    ops and would leave hooks behind on children.
    """

    def __init__(self, infer_batch, modules=None):
        super().__init__()
        self.infer_batch = infer_batch
        self.inference_modules = modules
        self.last_output = None

    def forward(self, wavs, wav_lens):
        """Runs infer_batch; returns its log-probabilities."""
        self.last_output = self.infer_batch(wavs, wav_lens)
        return self.last_output["log_probs"]


def _ptflops_count(module, wavs, wav_lens, backend, custom_hooks):
    """Runs ptflops on one batch; raises with ptflops' output if it fails."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        macs, _ = get_model_complexity_info(
            module,
            (wavs.shape[-1],),
            input_constructor=lambda _: {"wavs": wavs, "wav_lens": wav_lens},
            print_per_layer_stat=False,
            as_strings=False,
            backend=backend,
            custom_modules_hooks=custom_hooks,
            ost=printed,
        )
    if macs is None:
        raise RuntimeError(f"ptflops ({backend} backend) failed:\n{printed.getvalue()}")
    return int(macs)


def count_macs(infer_batch, wavs, wav_lens):
    """Counts the MACs of one call of ``infer_batch``, at the ATen level.

    Every matrix product and convolution that runs is counted (ptflops
    ``backend="aten"``), including the attention products of the fused
    scaled-dot-product attention ops, which ptflops' own table lacks. Runs
    under ``torch.no_grad()`` (ptflops' dispatch mode counts nothing under
    ``torch.inference_mode()``).

    Arguments
    ---------
    infer_batch : callable
        ``infer_batch(wavs, wav_lens) -> {"log_probs": ..., ...}``.
    wavs : torch.Tensor
        [batch, samples] waveforms.
    wav_lens : torch.Tensor
        Relative lengths.

    Returns
    -------
    macs : int
    output : dict
        What infer_batch returned.

    Example
    -------
    >>> linear = torch.nn.Linear(160, 8)
    >>> def infer_batch(wavs, wav_lens):
    ...     frames = wavs.view(wavs.shape[0], -1, 160)
    ...     return {"log_probs": linear(frames).log_softmax(-1)}
    >>> count_macs(infer_batch, torch.zeros(2, 1600), torch.ones(2))[0]
    25760
    """
    module = _InferBatchModule(infer_batch)
    with torch.no_grad():
        macs = _ptflops_count(module, wavs, wav_lens, "aten", _aten_mac_formulas())
    return macs, module.last_output


def count_module_hook_macs(infer_batch, modules, wavs, wav_lens):
    """Counts the MACs of one call of ``infer_batch`` with module hooks
    (ptflops ``backend="pytorch"``), like the thop count of the paper.

    Module hooks only see modules that are called: they miss functional
    calls such as WavLM's attention (projections passed as weights, and the
    products) and the weight-normed positional convolution, so this is lower
    than ``count_macs``; it is reported to compare with the paper's numbers.
    CNN front ends run as Hugging Face's ``Conv1d`` layers while counting
    (``front_end.channels_first_front_ends``), so that the hooks see them.

    Arguments
    ---------
    infer_batch : callable
        ``infer_batch(wavs, wav_lens) -> {"log_probs": ..., ...}``.
    modules : torch.nn.Module
        The modules infer_batch runs (hooked while counting).
    wavs : torch.Tensor
        [batch, samples] waveforms.
    wav_lens : torch.Tensor
        Relative lengths.

    Returns
    -------
    int

    Example
    -------
    >>> linear = torch.nn.Linear(160, 8)
    >>> def infer_batch(wavs, wav_lens):
    ...     frames = wavs.view(wavs.shape[0], -1, 160)
    ...     return {"log_probs": linear(frames).log_softmax(-1)}
    >>> count_module_hook_macs(infer_batch, linear, torch.zeros(2, 1600), torch.ones(2))
    25760
    """
    module = _InferBatchModule(infer_batch, modules)
    with torch.no_grad(), channels_first_front_ends(module):
        return _ptflops_count(module, wavs, wav_lens, "pytorch", {})


def evenly_spaced_indices(total, count=None):
    """``count`` indices spread evenly over ``range(total)`` (all of them if count is None).

    Test batches are sorted by duration, so the first batches are the shortest;
    spreading the counted batches keeps the mean MACs per batch unbiased.

    Example
    -------
    >>> sorted(evenly_spaced_indices(10, 3))
    [0, 4, 9]
    >>> len(evenly_spaced_indices(5))
    5
    """
    if count is None or count >= total:
        return set(range(total))
    if count == 1:
        return {total // 2}
    return {round(i * (total - 1) / (count - 1)) for i in range(count)}
