"""CPU inference at the machine's limit: the one place that chooses kernels, precision, front end.

- ``machine``: the processor's name, flags (bf16 instructions) and cores;
- ``kernels``: the linear layers' kernels (aten, oneDNN fp32 and bf16, int8) and their choice;
- ``allocator``: the C allocator keeps freed memory (no page faults per batch, glibc);
- ``attention``: WavLM's attention with its projections as modules;
- ``check``: reduced-precision kernels checked against fp32, per-layer fp32 fallbacks;
- ``path``: a path applied to modules and undone, the front-end choice, ``CpuPaths``;
- ``plan``: ``cpu_inference``, what the five tests and ``transcribe.py`` run.

Usage::

    from ssl_ctc.cpu.plan import cpu_inference
    with cpu_inference(brain.modules, "auto", probe=probe) as plan:
        output = brain.infer_batch(wavs, wav_lens)
"""
