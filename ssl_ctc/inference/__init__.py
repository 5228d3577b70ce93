"""The experiment's inference folder and what runs it: ``EncoderASR`` loading, transcription, ONNX.

- ``loading``: the folder's layout, reading it (``load_inference_encoder``), rebuilding a
  finished experiment's Brain (``load_experiment_brain``; its class is the ``brain_class``
  key of the experiment's YAML);
- ``runtime``: what the folder's ``hyperparams.yaml`` builds (the SSL encoder from its
  configuration, the Brain's inference path as ``EncoderASR``'s encoder, the decoding);
- ``hparams_yaml``: that ``hyperparams.yaml``, from the Brain's ``inference_*`` hooks;
- ``model_card``: the folder's ``README.md``;
- ``writer``: the folder written, checked against the Brain and swapped in;
- ``transcription``: audio files to transcripts (``transcribe.py``);
- ``onnx_export``: the acoustic model as one ONNX graph, checked against PyTorch before it is
  written (``python -m ssl_ctc.inference export``);
- ``deploy``: that graph run by ONNX Runtime or OpenVINO (``transcribe.py --runtime``);
- ``__main__``: the command line, ``python -m ssl_ctc.inference`` (the folder written again,
  or exported to ONNX).

Usage::

    python -m ssl_ctc.inference results/demo/SD2    # (re)write an experiment's inference folder
    python -m ssl_ctc.inference export results/demo/SD2 --format onnx --int8
"""
