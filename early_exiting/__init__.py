"""Early exit for speech SSL encoders (Zaiem et al. 2023): CTC heads on intermediate layers.

- ``layerwise_encoder``: runs a ``transformers`` WavLM / wav2vec 2.0 / HuBERT
  encoder (or the SpeechBrain wrapper around it) one layer at a time, with the
  model's own modules; with every layer it equals the model's output.
- ``exit_heads``: one CTC head per exit layer, in a ``ModuleDict``.
- ``criteria``: when to exit (``entropy``, ``similarity``, ``fixed``).
- ``early_exit``: ``EarlyExitEncoder``, per-utterance (or per-batch) early-exit
  inference and all-exits training.

- ``brain``: ``EarlyExitBrain``, the recipe's Brain for this strategy (joint training of
  the exit heads, early-exit testing and threshold sweeps), run by ``early_exiting.py``.

Usage: ``from early_exiting import EarlyExitEncoder, ExitHeads, build_exit_criterion``
"""

from early_exiting.criteria import (
    EXIT_CRITERIA,
    EXIT_DECISIONS,
    EntropyCriterion,
    ExitCriterion,
    FixedLayerCriterion,
    SimilarityCriterion,
    build_exit_criterion,
)
from early_exiting.early_exit import AllExitsOutput, EarlyExitEncoder, EarlyExitOutput
from early_exiting.exit_heads import ExitHeads, check_exit_layers
from early_exiting.layerwise_encoder import EncoderState, LayerwiseEncoder

__all__ = [
    "EXIT_CRITERIA",
    "EXIT_DECISIONS",
    "AllExitsOutput",
    "EarlyExitEncoder",
    "EarlyExitOutput",
    "EncoderState",
    "EntropyCriterion",
    "ExitCriterion",
    "ExitHeads",
    "FixedLayerCriterion",
    "LayerwiseEncoder",
    "SimilarityCriterion",
    "build_exit_criterion",
    "check_exit_layers",
]
