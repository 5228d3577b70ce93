"""The experiment's inference folder and what runs it: ``EncoderASR`` loading, transcription, ONNX.

Usage::

    python -m ssl_ctc.inference results/demo/SD2    # (re)write an experiment's inference folder
"""
