"""CPU inference at the machine's limit: kernels, precision and front end, decided in one place.

Measuring, deciding and applying are apart:

- ``machine``: the processor's name, flags (bf16 instructions) and cores;
- ``kernels``: the linear layers' kernels (aten, oneDNN fp32 and bf16, int8) and measuring
  them (``choose_backend``);
- ``front_end``: the CNN front end as channels-last products (``MatmulFeatureEncoder``) and
  measuring it against Hugging Face's convolutions (``choose_front_end``);
- ``check``: reduced-precision kernels checked against fp32, per-layer fp32 fallbacks;
- ``attention``: WavLM's attention with its projections as modules;
- ``allocator``: the C allocator keeps freed memory (no page faults per batch, glibc);
- ``path``: applying: a path (``CpuInferencePath``, ``HuggingFacePath``) swapped into modules
  and undone, and measuring the two whole-model paths (``choose_path``);
- ``decision``: deciding: ``decide_cpu_inference``, the one decision per precision that the
  five tests, ``transcribe.py`` and the speed script run (it alone calls the ``choose_*``
  measurements), ``CpuDecisions`` (kept per process) and ``cpu_inference`` (decide, apply).

Usage::

    from ssl_ctc.cpu.decision import cpu_inference
    with cpu_inference(brain.modules, "auto", probe=probe) as decision:
        output = brain.infer_batch(wavs, wav_lens)
"""
