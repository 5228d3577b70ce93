"""The recipe's library, grouped by concern: the core here, the rest in sub-packages.

The strategy scripts (``downsampled_train.py``, ``layer_removal.py``,
``early_exiting.py``) are thin: each runs ``ssl_ctc.recipe.main`` with its
strategy's Brain and the five tests (``ssl_ctc.benchmarking.five_tests``). Data flows
one way: scripts use the library, the library imports no script.

The core (training a strategy):

- ``recipe``: the sequence every strategy script runs (parse, prepare, fit, test, benchmark hook);
- ``brain``: the base Brain (encoder -> head -> CTC log-probs), no strategy in it;
- ``downsampling``, ``layer_removal``: the strategy Brains (early exit: ``early_exiting/``);
- ``encoder`` and ``front_end``: the SSL encoder through SpeechBrain's wrapper, padding-exact;
- ``data``: CSV manifests -> datasets -> test loaders (``librispeech_prepare.py`` writes the CSVs);
- ``ctc``: alphabet, tokenizer, the greedy decoder, CTC frame upsampling;
- ``lm_decoding``: the KenLM beam search, its defaults and worker pool;
- ``checkpoints``: checkpoints that survive a killed run;
- ``precision``: precision names and autocast; ``errors``, ``files``, ``imports``: small helpers;
- ``names``: the five tests' and an experiment's file names (imports nothing).

Sub-packages:

- ``benchmarking``: the five tests' parts (settings, measurement, MACs, records, summary);
- ``cpu``: the one CPU decision (kernels, checked reduced precisions, front end, machine facts);
- ``inference``: the experiment's ``inference/`` folder (writer, loader, runtime, model card),
  transcription and ONNX export.

The speed analysis is ``speed_analysis/``, outside the library.
"""
