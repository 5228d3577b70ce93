"""The CNN front end of wav2vec 2.0, HuBERT and WavLM as channels-last matrix products.

On CPU the Hugging Face front end runs at about half the arithmetic rate of
the transformer layers: oneDNN's 1-D convolutions are slower than a matrix
product of the same size, and every LayerNorm over channels is wrapped in two
transposes that copy the largest activations of the whole model (512 channels
at 3.2 kHz for the first layer). Since a fixed-cost front end that runs slowly
makes every saving in the transformer (layer removal, early exit) smaller in
time than in compute, ``MatmulFeatureEncoder`` runs the same layers in the
``[batch, time, channels]`` layout: each convolution is one matrix product on
its overlapping windows (``Tensor.unfold``), after which LayerNorm normalises
the contiguous last dimension with no transpose. Same modules, weights and
state-dict keys; same outputs to float rounding. On other devices the layers
run as in Hugging Face's forward. Which of the two front ends (``FRONT_ENDS``) is
faster depends on the processor: ``choose_front_end`` measures them (for the decision,
``ssl_ctc.cpu.decision``); ``front_end_mode`` and ``front_end_kernels`` apply one.

Usage::

    from ssl_ctc.cpu.front_end import use_matmul_front_end
    use_matmul_front_end(model)  # a transformers Wav2Vec2/HuBERT/WavLM model

Authors
 * Recipe team 2026
"""

import contextlib

import torch
import torch.nn.functional as F

from ssl_ctc.cpu.kernels import (
    KERNELS,
    PROBE_REPEATS,
    conv_as_linear,
    median_seconds,
    runs_cpu_kernel,
)
from ssl_ctc.precision import autocast

# CNN front ends: ``MatmulFeatureEncoder``'s channels-last products, or Hugging Face's convolutions.
FRONT_ENDS = ("matmul", "hugging_face")


FRONT_END_PROBE_SAMPLES = (1, 32000)  # one 2-second utterance at 16 kHz


class MatmulFeatureEncoder(torch.nn.Module):
    """A Hugging Face CNN feature encoder run as channels-last matrix products on CPU.

    Arguments
    ---------
    feature_encoder : torch.nn.Module
        The model's ``feature_extractor`` (``conv_layers`` of LayerNorm,
        GroupNorm or no-norm convolution layers); its layers are shared, not copied.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> config = WavLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=64, conv_dim=(16,) * 7, feat_extract_norm="layer")
    >>> model = WavLMModel(config).eval()
    >>> wavs = torch.randn(2, 4000)
    >>> expected = model.feature_extractor(wavs)
    >>> fast = MatmulFeatureEncoder(model.feature_extractor)
    >>> torch.allclose(fast(wavs), expected, atol=1e-5), list(fast.state_dict())[0]
    (True, 'conv_layers.0.conv.weight')
    """

    def __init__(self, feature_encoder):
        super().__init__()
        for index, layer in enumerate(feature_encoder.conv_layers):
            conv = layer.conv
            if conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1:
                raise ValueError(
                    f"conv_layers.{index}: only unpadded, undilated, ungrouped convolutions "
                    f"run as matrix products (padding {conv.padding}, dilation "
                    f"{conv.dilation}, groups {conv.groups})"
                )
        self.conv_layers = feature_encoder.conv_layers
        self.use_matmuls = True  # False: Hugging Face's layers everywhere (module-hook MAC counts)
        # One ``kernel(windows)`` per layer in CPU inference (set by ``front_end_kernels``: weights
        # packed for the processor); None: ``F.linear``.
        self.conv_kernels = None

    def _freeze_parameters(self):
        """Stop the front end's training, as Hugging Face's ``freeze_feature_encoder`` does."""
        for parameter in self.parameters():
            parameter.requires_grad = False

    def forward(self, wavs):
        """Waveforms ``[B, samples]`` to features ``[B, channels, frames]``, as the original.

        The result is a transposed view of ``[B, frames, channels]`` memory, so
        the model's own ``transpose(1, 2)`` that follows costs nothing.
        """
        if wavs.device.type != "cpu" or not self.use_matmuls:
            return self.channels_first(wavs)
        hidden_states = wavs[:, :, None]
        kernels = self.conv_kernels or [None] * len(self.conv_layers)
        for layer, kernel in zip(self.conv_layers, kernels, strict=True):
            hidden_states = channels_last_conv_layer(layer, hidden_states, kernel)
        return hidden_states.transpose(1, 2)

    def channels_first(self, wavs):
        """Hugging Face's own forward: each layer on ``[B, channels, frames]``."""
        hidden_states = wavs[:, None]
        for layer in self.conv_layers:
            hidden_states = layer(hidden_states)
        return hidden_states


def channels_last_conv_layer(layer, hidden_states, kernel=None):
    """One front-end layer (convolution, norm, activation) on ``[B, T, C]`` inputs.

    Arguments
    ---------
    layer : torch.nn.Module
        A Hugging Face ``*LayerNormConvLayer``, ``*GroupNormConvLayer`` or
        ``*NoLayerNormConvLayer``: ``conv``, ``activation`` and optional ``layer_norm``.
    hidden_states : torch.Tensor
        ``[B, T, C_in]``.
    kernel : callable, optional
        ``kernel(windows)`` -> the product of ``[rows, C_in * kernel_size]`` windows
        (``ssl_ctc.cpu.kernels``), run where ``runs_cpu_kernel`` says; else ``F.linear``.

    Returns
    -------
    torch.Tensor
        ``[B, T_out, C_out]``, equal to the layer's output transposed.

    Example
    -------
    >>> from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2LayerNormConvLayer
    >>> from transformers import Wav2Vec2Config
    >>> config = Wav2Vec2Config(conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2))
    >>> layer = Wav2Vec2LayerNormConvLayer(config, layer_id=1)
    >>> inputs = torch.randn(2, 8, 50)
    >>> output = channels_last_conv_layer(layer, inputs.transpose(1, 2))
    >>> torch.allclose(output.transpose(1, 2), layer(inputs), atol=1e-6)
    True
    """
    conv = layer.conv
    windows = hidden_states.unfold(1, conv.kernel_size[0], conv.stride[0])  # [B, T_out, C, k]
    batch_size, num_frames = windows.shape[:2]
    windows = windows.reshape(batch_size * num_frames, -1)
    if kernel is not None and runs_cpu_kernel(windows):
        hidden_states = kernel(windows)
    else:  # one 2-D product (addmm with the bias, counted as ptflops counts a convolution's)
        hidden_states = F.linear(windows, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    hidden_states = hidden_states.view(batch_size, num_frames, conv.out_channels)
    norm = getattr(layer, "layer_norm", None)
    if isinstance(norm, torch.nn.LayerNorm):
        hidden_states = norm(hidden_states)
    elif norm is not None:  # GroupNorm with a group per channel: normalises over time
        hidden_states = norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return layer.activation(hidden_states)


def use_matmul_front_end(model):
    """Replace a Hugging Face SSL model's ``feature_extractor`` by ``MatmulFeatureEncoder``.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        A Wav2Vec2, HuBERT or WavLM model (changed in place; loading and saving
        are unaffected, the state-dict keys stay the same).

    Returns
    -------
    MatmulFeatureEncoder
        The new front end.
    """
    if not isinstance(model.feature_extractor, MatmulFeatureEncoder):
        model.feature_extractor = MatmulFeatureEncoder(model.feature_extractor)
    return model.feature_extractor


@contextlib.contextmanager
def channels_first_front_ends(module):
    """Run every ``MatmulFeatureEncoder`` in ``module`` as Hugging Face's layers for a while.

    Module hooks (ptflops' "pytorch" backend, the paper's way of counting)
    then see the ``Conv1d`` and ``LayerNorm`` calls they count.

    Arguments
    ---------
    module : torch.nn.Module
        Searched recursively.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7))
    >>> front_end = use_matmul_front_end(model)
    >>> with channels_first_front_ends(model):
    ...     front_end.use_matmuls
    False
    >>> front_end.use_matmuls
    True
    """
    front_ends = [child for child in module.modules() if isinstance(child, MatmulFeatureEncoder)]
    for front_end in front_ends:
        front_end.use_matmuls = False
    try:
        yield
    finally:
        for front_end in front_ends:
            front_end.use_matmuls = True


def front_end_precision(precision):
    """The precision the CNN front end runs in for a model's CPU ``precision``: int8 quantizes
    the linear layers only (the front end stays fp32), bf16 autocast runs it in bf16.

    Example
    -------
    >>> front_end_precision("int8"), front_end_precision("bf16"), front_end_precision("fp32")
    ('fp32', 'bf16', 'fp32')
    """
    return "fp32" if precision == "int8" else precision


def matmul_front_ends(modules):
    """The ``MatmulFeatureEncoder`` instances in ``modules`` (none: no front end to choose)."""
    return [module for module in modules.modules() if isinstance(module, MatmulFeatureEncoder)]


def front_end_mode(modules, front_end):
    """Context in which ``modules``' front ends run as ``front_end`` (one of ``FRONT_ENDS``)."""
    if front_end == "hugging_face":
        return channels_first_front_ends(modules)
    return contextlib.nullcontext()


@contextlib.contextmanager
def front_end_kernels(front_ends, kernel_of):
    """Each ``MatmulFeatureEncoder``'s convolutions run ``kernel_of(conv)`` for the block.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> front_end = use_matmul_front_end(WavLMModel(WavLMConfig(hidden_size=32,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7)))
    >>> with front_end_kernels([front_end], lambda conv: KERNELS["onednn"](conv_as_linear(conv))):
    ...     len(front_end.conv_kernels)
    7
    >>> front_end.conv_kernels is None
    True
    """
    for front_end in front_ends:
        front_end.conv_kernels = [kernel_of(layer.conv) for layer in front_end.conv_layers]
    try:
        yield
    finally:
        for front_end in front_ends:
            front_end.conv_kernels = None


def choose_front_end(modules, precision="fp32", repeats=PROBE_REPEATS, conv_backend=None):
    """The faster CNN front end on this machine, and the seconds measured.

    Which one wins depends on the processor (oneDNN's convolutions against its
    matrix products): it is measured, alternately, on a random 2-second
    utterance through the first ``MatmulFeatureEncoder`` in ``modules``.

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively.
    precision : str
        "fp32", "bf16" (measured under bf16 autocast) or "int8" (the front end is fp32).
    repeats : int
        Timed calls per front end and round (median kept; best of two rounds).
    conv_backend : str, optional
        Kernel (a key of ``KERNELS``) of the matmul front end's products in fp32; None:
        ``F.linear`` (as under bf16 autocast).

    Returns
    -------
    tuple
        ``(front_end, {front_end: seconds})``, ``front_end`` one of ``FRONT_ENDS``;
        ``(None, {})`` without a ``MatmulFeatureEncoder`` (nothing is measured).

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7))
    >>> choose_front_end(model)
    (None, {})
    >>> _ = use_matmul_front_end(model)
    >>> front_end, seconds = choose_front_end(model)
    >>> front_end in FRONT_ENDS, sorted(seconds) == sorted(FRONT_ENDS)
    (True, True)
    """
    front_ends = matmul_front_ends(modules)
    if not front_ends:
        return None, {}
    front_end = front_ends[0]
    wavs = torch.randn(*FRONT_END_PROBE_SAMPLES)
    seconds = {}
    packed = {}  # conv -> kernel, packed once for both rounds

    def kernel_of(conv):
        if conv not in packed:
            packed[conv] = KERNELS[conv_backend](conv_as_linear(conv))
        return packed[conv]

    with torch.inference_mode(), autocast("cpu", precision):
        for _ in range(2):  # alternated, so that a load change does not favour one
            for name in FRONT_ENDS:
                kernels = contextlib.nullcontext()
                if name == "matmul" and conv_backend is not None:
                    kernels = front_end_kernels([front_end], kernel_of)
                with front_end_mode(front_end, name), kernels:
                    median = median_seconds(lambda: front_end(wavs), repeats)
                seconds[name] = min(seconds.get(name, median), median)
    return min(seconds, key=seconds.get), seconds

