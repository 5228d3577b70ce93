"""CPU inference at the machine's limit: the one place that chooses kernels, precision, front end.

Usage::

    from ssl_ctc.cpu.plan import cpu_inference
    with cpu_inference(brain.modules, "auto", probe=probe) as plan:
        output = brain.infer_batch(wavs, wav_lens)
"""
