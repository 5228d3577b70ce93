"""Exit criteria: after an exit layer, which utterances may stop there.

- ``entropy``: the mean per-frame entropy (nats) of the exit head's CTC
  posteriors, over valid frames, is below a threshold (confident head).
- ``similarity``: the mean cosine similarity, over valid frames, between the
  hidden states before and after the layer is above a threshold (the layer
  changed little); cheaper, no head runs before the exit.
- ``fixed``: always exit at a given layer.

Averages are per utterance (``decision="utterance"``) or over all valid frames
of the batch (``decision="batch"``, the paper's per-batch decision).

Usage: ``criterion = build_exit_criterion("entropy", threshold=0.05)``
"""

import math
import operator

import torch
import torch.nn.functional as F

EXIT_DECISIONS = ("utterance", "batch")


def check_decision(decision):
    """Validate an exit decision mode.

    Arguments
    ---------
    decision : str
        ``"utterance"`` (each utterance exits on its own) or ``"batch"``.

    Returns
    -------
    str
        ``decision``.

    Example
    -------
    >>> check_decision("batch")
    'batch'
    >>> check_decision("frame")
    Traceback (most recent call last):
     ...
    ValueError: unknown exit decision 'frame'; valid: utterance, batch
    """
    if decision not in EXIT_DECISIONS:
        raise ValueError(f"unknown exit decision {decision!r}; valid: {', '.join(EXIT_DECISIONS)}")
    return decision


def average_over_valid_frames(frame_values, frame_mask, decision="utterance"):
    """Mean of per-frame values over valid frames, per utterance or over the batch.

    Arguments
    ---------
    frame_values : torch.Tensor
        ``[B, T]`` values (padded frames are ignored, even if NaN).
    frame_mask : torch.Tensor
        ``[B, T]`` bool, True on valid frames.
    decision : str
        ``"utterance"``: one mean per utterance; ``"batch"``: the mean over all
        valid frames of the batch, repeated for each utterance.

    Returns
    -------
    torch.Tensor
        ``[B]`` means.

    Example
    -------
    >>> values = torch.tensor([[1.0, 3.0, 9.0], [4.0, 9.0, 9.0]])
    >>> mask = torch.tensor([[True, True, False], [True, False, False]])
    >>> average_over_valid_frames(values, mask)
    tensor([2., 4.])
    >>> average_over_valid_frames(values, mask, decision="batch")
    tensor([2.6667, 2.6667])
    """
    check_decision(decision)
    frame_values = torch.where(frame_mask, frame_values, torch.zeros_like(frame_values))
    if decision == "batch":
        mean = frame_values.sum() / frame_mask.sum()
        return mean.expand(frame_values.shape[0])
    return frame_values.sum(dim=1) / frame_mask.sum(dim=1)


class ExitCriterion:
    """Base class: decides, after an exit layer, which utterances leave the batch.

    ``uses_exit_head`` tells whether the decision needs the exit head's log-probs
    (then the head runs on every remaining utterance at every exit layer).
    """

    name = None
    uses_exit_head = False

    @property
    def label(self):
        """Short name of the criterion and its setting, for results tables (``H<0.05``)."""
        raise NotImplementedError

    @property
    def threshold_value(self):
        """The threshold recorded with the results, or None for a criterion without one."""
        return getattr(self, "threshold", None)

    def check_exit_layers(self, exit_layers):
        """Raise ValueError if the criterion cannot work with these exit layers.

        Arguments
        ---------
        exit_layers : list of int
            The layers that have an exit head; any is fine unless overridden.
        """

    def should_exit(
        self, layer, hidden_states, previous_hidden_states, log_probs, frame_mask, decision
    ):
        """Which utterances exit after ``layer``.

        Arguments
        ---------
        layer : int
            The exit layer just run (1-based).
        hidden_states : torch.Tensor
            ``[B, T, C]`` output of the layer.
        previous_hidden_states : torch.Tensor
            ``[B, T, C]`` input of the layer.
        log_probs : torch.Tensor or None
            ``[B, T, V]`` exit head output if ``uses_exit_head``, else None.
        frame_mask : torch.Tensor
            ``[B, T]`` bool, True on valid frames.
        decision : str
            ``"utterance"`` or ``"batch"``.

        Returns
        -------
        torch.Tensor
            ``[B]`` bool, True for the utterances that exit.
        """
        raise NotImplementedError


class EntropyCriterion(ExitCriterion):
    """Exit when the mean per-frame entropy of the exit's posteriors is below a threshold.

    Arguments
    ---------
    threshold : float
        In nats, >= 0 (the paper sweeps 0.01-0.10). Lower is stricter (exits later).

    Example
    -------
    >>> criterion = EntropyCriterion(threshold=0.1)
    >>> confident = torch.log_softmax(torch.tensor([[[9.0, 0.0, 0.0]]]), dim=-1)
    >>> unsure = torch.zeros(1, 1, 3).log_softmax(-1)
    >>> log_probs = torch.cat([confident, unsure])
    >>> mask = torch.ones(2, 1, dtype=torch.bool)
    >>> criterion.should_exit(3, None, None, log_probs, mask, "utterance")
    tensor([ True, False])
    """

    name = "entropy"
    uses_exit_head = True

    @property
    def label(self):
        """``H<threshold``, e.g. ``H<0.05``."""
        return f"H<{self.threshold:g}"

    def __init__(self, threshold):
        self.threshold = _check_number(threshold, "entropy threshold (nats)")
        if self.threshold < 0:
            raise ValueError(f"entropy threshold must be >= 0 nats, got {threshold}")

    def should_exit(
        self, layer, hidden_states, previous_hidden_states, log_probs, frame_mask, decision
    ):
        """True where the mean entropy over valid frames is below the threshold."""
        frame_entropy = torch.special.entr(log_probs.exp()).sum(dim=-1)
        return average_over_valid_frames(frame_entropy, frame_mask, decision) < self.threshold


class SimilarityCriterion(ExitCriterion):
    """Exit when a layer barely changes the hidden states (mean cosine similarity).

    Arguments
    ---------
    threshold : float
        In [-1, 1] (the paper sweeps 0.90-0.99). Higher is stricter (exits later).

    Example
    -------
    >>> criterion = SimilarityCriterion(threshold=0.95)
    >>> before = torch.ones(2, 3, 4)
    >>> after = torch.stack([torch.ones(3, 4), -torch.ones(3, 4)])
    >>> mask = torch.ones(2, 3, dtype=torch.bool)
    >>> criterion.should_exit(3, after, before, None, mask, "utterance")
    tensor([ True, False])
    """

    name = "similarity"

    @property
    def label(self):
        """``S>threshold``, e.g. ``S>0.95``."""
        return f"S>{self.threshold:g}"

    def __init__(self, threshold):
        self.threshold = _check_number(threshold, "similarity threshold")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"similarity threshold must be in [-1, 1], got {threshold}")

    def should_exit(
        self, layer, hidden_states, previous_hidden_states, log_probs, frame_mask, decision
    ):
        """True where the mean cosine similarity over valid frames is above the threshold."""
        frame_similarity = F.cosine_similarity(hidden_states, previous_hidden_states, dim=-1)
        return average_over_valid_frames(frame_similarity, frame_mask, decision) > self.threshold


class FixedLayerCriterion(ExitCriterion):
    """Always exit at one layer (which must have an exit head).

    Arguments
    ---------
    layer : int
        The exit layer (1-based).

    Example
    -------
    >>> criterion = FixedLayerCriterion(layer=3)
    >>> mask = torch.ones(2, 5, dtype=torch.bool)
    >>> criterion.should_exit(2, None, None, None, mask, "utterance")
    tensor([False, False])
    >>> criterion.should_exit(3, None, None, None, mask, "utterance")
    tensor([True, True])
    """

    name = "fixed"

    @property
    def label(self):
        """``L<layer>``, e.g. ``L18``."""
        return f"L{self.layer}"

    def __init__(self, layer):
        try:
            self.layer = operator.index(layer)
        except TypeError as error:
            raise ValueError(f"fixed exit layer must be an integer >= 1, got {layer!r}") from error
        if self.layer < 1:
            raise ValueError(f"fixed exit layer must be an integer >= 1, got {layer!r}")

    def check_exit_layers(self, exit_layers):
        """The fixed layer must be one of the exit layers."""
        if self.layer not in exit_layers:
            raise ValueError(
                f"fixed exit layer {self.layer} has no exit head; exit layers: {exit_layers}"
            )

    def should_exit(
        self, layer, hidden_states, previous_hidden_states, log_probs, frame_mask, decision
    ):
        """True for every utterance from the fixed layer on."""
        return torch.full(
            (frame_mask.shape[0],), layer >= self.layer, dtype=torch.bool, device=frame_mask.device
        )


EXIT_CRITERIA = {
    criterion.name: criterion
    for criterion in (EntropyCriterion, SimilarityCriterion, FixedLayerCriterion)
}


def build_exit_criterion(name, threshold=None, layer=None):
    """Build an exit criterion from its name (for YAML keys and command-line sweeps).

    Arguments
    ---------
    name : str
        ``"entropy"``, ``"similarity"`` or ``"fixed"``.
    threshold : float, optional
        Threshold of ``entropy`` (nats, >= 0) or ``similarity`` (in [-1, 1]).
    layer : int, optional
        Exit layer of ``fixed``.

    Returns
    -------
    ExitCriterion
        The criterion (the setting it does not use is ignored).

    Example
    -------
    >>> build_exit_criterion("similarity", threshold=0.95).label
    'S>0.95'
    >>> build_exit_criterion("fixed", layer=18).layer
    18
    >>> build_exit_criterion("confidence", threshold=0.5)
    Traceback (most recent call last):
     ...
    ValueError: unknown exit criterion 'confidence'; valid names: entropy, similarity, fixed
    """
    if name not in EXIT_CRITERIA:
        raise ValueError(
            f"unknown exit criterion {name!r}; valid names: {', '.join(EXIT_CRITERIA)}"
        )
    if name == FixedLayerCriterion.name:
        return FixedLayerCriterion(layer)
    return EXIT_CRITERIA[name](threshold)


def _check_number(value, what):
    """``value`` as a float; ValueError naming ``what`` if missing or not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a number, got {value!r}") from error
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number
