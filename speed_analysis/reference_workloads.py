"""Reference workloads the speed script times beside the recipe: matmuls, bare forwards, parts.

Usage::

    run_batch = layer_matmuls(1024, 4096, rows_by_samples, "cpu")
"""

import torch
from speechbrain.integrations.huggingface.wav2vec2 import make_padding_masks

from ssl_ctc.benchmarking.macs import count_macs
from ssl_ctc.cpu.kernels import KERNEL_PRECISIONS, KERNELS


def layer_matmuls(hidden_size, intermediate_size, rows_by_samples, device, backend="aten"):
    """The linear layers of one transformer layer, as a batch function.

    For a batch: the Q, K, V and output projections (``hidden x hidden``) and
    the feed-forward pair (``hidden x intermediate``, ``intermediate x hidden``)
    on ``rows x hidden`` inputs, ``rows`` being the batch's utterances times its
    padded encoder frames, with a kernel of ``ssl_ctc.cpu.kernels.KERNELS``: "aten"
    (``torch.nn.functional.linear``, the op of ``nn.Linear``), "bf16" (the same on bf16
    operands), or, on CPU, "onednn", "onednn_bf16" (packed weights) or "int8".
    ``layer_macs_per_row`` gives the MACs of one row.

    Arguments
    ---------
    hidden_size : int
        Model width.
    intermediate_size : int
        Feed-forward width.
    rows_by_samples : dict
        Padded samples of a batch -> its rows.
    device : str
        Where the operands live.
    backend : str
        A key of ``KERNELS`` ("aten", "onednn", "int8", "bf16", "onednn_bf16").

    Returns
    -------
    callable
        ``run_batch(wavs, wav_lens)``: the matmuls of the batch of ``wavs``'s length.

    Example
    -------
    >>> run_batch = layer_matmuls(8, 16, {1600: 10}, "cpu")
    >>> run_batch(torch.zeros(2, 1600), None).shape
    torch.Size([10, 8])
    >>> layer_matmuls(8, 16, {1600: 10}, "cpu", "int8")(torch.zeros(2, 1600), None).shape
    torch.Size([10, 8])
    """
    generator = torch.Generator().manual_seed(0)

    def operand(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    shapes = [(hidden_size, hidden_size)] * 4 + [(intermediate_size, hidden_size),
                                                   (hidden_size, intermediate_size)]
    kernels = []
    for out_features, in_features in shapes:
        linear = torch.nn.Linear(in_features, out_features, device=device)
        with torch.no_grad():
            linear.weight.copy_(operand(out_features, in_features))
            linear.bias.copy_(operand(out_features))
        kernels.append(KERNELS[backend](linear))
    dtype = torch.bfloat16 if KERNEL_PRECISIONS[backend] == "bf16" else torch.float32
    inputs = {samples: operand(rows, hidden_size).to(dtype)
              for samples, rows in rows_by_samples.items()}

    def run_batch(wavs, wav_lens):
        rows = inputs[wavs.shape[1]]
        for kernel in kernels[:4]:
            kernel(rows)
        return kernels[5](kernels[4](rows))

    return run_batch


def layer_macs_per_row(hidden_size, intermediate_size):
    """MACs of ``layer_matmuls`` per input row (biases not counted).

    Example
    -------
    >>> layer_macs_per_row(1024, 4096)
    12582912
    """
    return 4 * hidden_size * hidden_size + 2 * hidden_size * intermediate_size


def bare_forward(brain, masked=False):
    """A bare ``model(wavs)`` forward of the Hugging Face encoder, the head, and argmax.

    No downsampler, waveform normalisation, output norm, log-softmax or
    decoding: the least a baseline forward can do; and no attention mask unless
    ``masked``, when the model gets the padding mask the recipe's wrapper gives
    it (padded frames must not be attended to).

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        A baseline brain.
    masked : bool
        Pass the padding mask of ``wav_lens`` as ``attention_mask``.

    Returns
    -------
    callable
        ``run_batch(wavs, wav_lens)`` -> best label per frame.
    """
    model, enc, ctc_lin = brain.modules.ssl.model, brain.modules.enc, brain.modules.ctc_lin

    def run_batch(wavs, wav_lens):
        mask = make_padding_masks(wavs, wav_len=wav_lens) if masked else None
        return ctc_lin(enc(model(wavs, attention_mask=mask).last_hidden_state)).argmax(dim=-1)

    return run_batch


def downsample_only(brain):
    """The brain's downsampler alone, as a batch function."""
    downsampler = brain.modules.downsampler

    def run_batch(wavs, wav_lens):
        return downsampler(wavs)

    return run_batch


def front_end_only(brain, channels_first=False):
    """The encoder's CNN feature extractor alone, as a batch function (``log_probs``: features).

    The output is a dict so that ``count_macs`` can count it too.
    ``channels_first`` runs Hugging Face's own convolution layers instead of the
    recipe's channels-last matrix products (``front_end.MatmulFeatureEncoder``).
    """
    cnn = brain.modules.ssl.model.feature_extractor
    run_cnn = cnn.channels_first if channels_first else cnn

    def run_batch(wavs, wav_lens):
        return {"log_probs": run_cnn(wavs)}

    return run_batch


def count_variant_macs(infer_batch, batches):
    """MACs of ``infer_batch`` over every batch, with ``count_macs`` (CPU, fp32).

    Returns
    -------
    int
    """
    return sum(count_macs(infer_batch, wavs, wav_lens)[0] for wavs, wav_lens in batches)
