"""The shared library of the recipe: one module per responsibility.

The strategy scripts (``downsampled_train.py``, ``layer_removal.py``,
``early_exiting.py``) are thin: each runs ``ssl_ctc.recipe.run_recipe`` with its
strategy's Brain. Data flows one way, and each arrow has one home:

- ``data``: CSV manifests -> datasets -> test loaders (``librispeech_prepare.py`` writes the CSVs);
- ``downsampling``: the downsampler before the encoder, the ``DownsampledBrain``;
- ``layer_removal``: the ``LayerRemovalBrain`` (depth cut in ``encoder``);
- ``encoder`` and ``front_end``: the SSL encoder through SpeechBrain's wrapper, padding-exact;
- ``brain``: the base Brain (encoder -> head -> CTC log-probs), no strategy in it;
- ``ctc``: alphabet, tokenizer, the greedy decoder, CTC frame upsampling;
- ``lm_decoding``: the KenLM beam search and its worker pool;
- ``checkpoints``: checkpoints that survive a killed run;
- ``recipe``: the sequence every strategy script runs;
- ``inference`` and ``transcription``: the experiment's ``inference/`` folder (``EncoderASR``)
  and what ``transcribe.py`` runs;
- ``benchmark_settings``, ``timing``, ``macs``, ``records``, ``summary``: what the five tests
  (``benchmark.py``) use;
- ``cpu_inference``: CPU inference at the machine's limit (fastest exact fp32, bf16, int8), its
  peer ``onnx_export`` (ONNX Runtime, timed by the speed script);
- ``random_encoders``, ``synthetic_utterances``, ``reference_workloads``, ``speed_overheads``,
  ``speed_report``: what the speed script (``speed_benchmark.py``) uses.

The early-exit strategy is the package ``early_exiting/`` beside this one.
"""
