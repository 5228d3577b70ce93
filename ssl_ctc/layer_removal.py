"""Layer removal strategy: the encoder cut to its first N transformer layers.

The depth is set to ``considered_layers`` in the encoder's configuration before its
weights load (``ssl_ctc.encoder.SSLEncoder``), so removed layers cost neither memory
nor time. It composes with downsampling (``SD2 18L``).

Usage::

    python layer_removal.py hparams/layer_removal.yaml --data_folder /path/to/LibriSpeech \
        --considered_layers 18
"""

from ssl_ctc.downsampling import DownsampledBrain


class LayerRemovalBrain(DownsampledBrain):
    """The downsampling Brain on a truncated encoder; adds the depth to the experiment's name."""

    def experiment_tags(self):
        """``18L`` (or ``SD2 18L`` with downsampling); the full depth keeps its base name."""
        tags = super().experiment_tags()
        if self.hparams.considered_layers is None:
            return tags
        layers = tags["layers"]
        downsampled = tags["factor"] > 1
        return {
            **tags,
            "name": f"{tags['name']} {layers}L" if downsampled else f"{layers}L",
            "strategy": f"{tags['strategy']}+layer_removal" if downsampled else "layer_removal",
            "label": f"{tags['label']} {layers} L" if downsampled else f"{layers} L",
            "baseline": False,
        }
