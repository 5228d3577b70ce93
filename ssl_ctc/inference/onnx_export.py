"""A brain's acoustic model (downsampler, encoder, head) as ONNX, run by ONNX Runtime's CPU session.

The peer engine many users would pick: ``export_acoustic_model`` traces
``brain.encode`` and the CTC head to ONNX (TorchScript exporter, dynamic batch and
sample axes), ``onnx_session`` opens it in fp32 or after ONNX Runtime's dynamic
int8 quantisation, and ``onnx_batch_function`` runs a session on the speed
script's batches.

Usage::

    path = export_acoustic_model(brain, wavs, wav_lens, folder / "model.onnx")
    run_batch = onnx_batch_function(onnx_session(path, threads=2, int8=True))
"""

import torch

from ssl_ctc.front_end import channels_first_front_ends

ONNX_OPSET = 17


# What ONNX Runtime's dynamic int8 quantises: the linear layers' products only (the CNN front
# end's convolutions in int8 run slower than in fp32).
INT8_OP_TYPES = ["MatMul"]


class AcousticModel(torch.nn.Module):
    """``brain.encode`` then the CTC head's log-probabilities, as one module to export."""

    def __init__(self, brain):
        super().__init__()
        self.brain = brain
        self.modules_to_export = brain.modules  # registered, so the exporter sees the weights

    def forward(self, wavs, wav_lens):
        return self.brain.classify(self.brain.encode(wavs, wav_lens))


def export_acoustic_model(brain, wavs, wav_lens, path):
    """Export the brain's acoustic model to ``path``; raises with the failing step named.

    Arguments
    ---------
    brain : ssl_ctc.brain.SSLCTCBrain
        In eval mode, on CPU.
    wavs, wav_lens : torch.Tensor
        An example batch (its shapes are made dynamic).
    path : pathlib.Path
        Where the ``.onnx`` file goes (weights in the same file, or beside it past 2 GB).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The channels-last front end's ``Tensor.unfold`` has no ONNX export with dynamic
    # lengths ("input size not accessible"): export Hugging Face's convolutions. The
    # encoder's valid-prefix normalisations trace their masked formulation by themselves.
    with torch.no_grad(), channels_first_front_ends(brain.modules):
        torch.onnx.export(
            AcousticModel(brain).eval(), (wavs, wav_lens), str(path), dynamo=False,
            input_names=["wavs", "wav_lens"], output_names=["log_probs"],
            dynamic_axes={"wavs": {0: "batch", 1: "samples"}, "wav_lens": {0: "batch"},
                          "log_probs": {0: "batch", 1: "frames"}},
            opset_version=ONNX_OPSET)
    return path


def quantize_int8(path):
    """ONNX Runtime's dynamic int8 quantisation of every MatMul's weights; the new path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = path.with_name(path.stem + ".int8.onnx")
    quantize_dynamic(str(path), str(int8_path), op_types_to_quantize=INT8_OP_TYPES,
                     weight_type=QuantType.QInt8, use_external_data_format=True)
    return int8_path


def onnx_session(path, threads, int8=False):
    """An ONNX Runtime CPU session of ``path`` (int8: of its dynamic int8 quantisation)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    model_path = quantize_int8(path) if int8 else path
    return onnxruntime.InferenceSession(str(model_path), options,
                                        providers=["CPUExecutionProvider"])


def onnx_batch_function(session):
    """``run_batch(wavs, wav_lens)`` -> log-probs ``[B, T, V]`` (a tensor) through a session."""

    def run_batch(wavs, wav_lens):
        outputs = session.run(None, {"wavs": wavs.numpy(), "wav_lens": wav_lens.numpy()})
        return torch.from_numpy(outputs[0])

    return run_batch
