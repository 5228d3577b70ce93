"""The paper's variants, written once: name -> strategy script, recipe YAML and overrides.

The speed script builds each variant's Brain from these (``speed_analysis.brains``);
``tools/run_demo.py`` runs the scripts with them. Nothing heavy is imported here.

Usage::

    variant = VARIANTS["SD2"]
    command = ["python", variant.script, variant.hparams_path, *variant.command_line()]
"""

import dataclasses

from ssl_ctc.benchmarking.grid import downsampling_overrides


@dataclasses.dataclass(frozen=True)
class Variant:
    """A row of the comparison: a strategy script, its recipe YAML and the overrides that make it.

    Arguments
    ---------
    name : str
        Short name, also the speed script's ``--variants`` key.
    script : str
        The strategy script that trains and tests it (top level of the repository).
    hparams_file : str
        YAML under ``hparams/``.
    overrides : dict
        YAML keys to override, as on the recipe's command line.
    """

    name: str
    script: str
    hparams_file: str
    overrides: dict

    @property
    def hparams_path(self):
        """The YAML's path from the repository root."""
        return f"hparams/{self.hparams_file}"

    def command_line(self):
        """The overrides as the strategy script's command-line arguments.

        Example
        -------
        >>> VARIANTS["SD2"].command_line()
        ['--downsampling_technique', 'signal_downsampling', '--downsampling_factor', '2']
        """
        return [str(item) for key, value in self.overrides.items()
                for item in (f"--{key}", value)]


def _downsampling(name, **overrides):
    return Variant(name, "downsampled_train.py", "downsampling.yaml", overrides)


def _layer_removal(name, **overrides):
    return Variant(name, "layer_removal.py", "layer_removal.yaml", overrides)


VARIANTS = {
    variant.name: variant
    for variant in (
        _downsampling("baseline", downsampling_factor=1),
        *(_downsampling(name, **downsampling_overrides(name))
          for name in ("SD2", "SD3", "AV2", "CL2", "CL3")),
        _layer_removal("18L", considered_layers=18, downsampling_factor=1),
        _layer_removal("12L", considered_layers=12, downsampling_factor=1),
        Variant("EE18", "early_exiting.py", "early_exiting/early_exits.yaml",
                {"exit_criterion": "fixed", "exit_layer": 18}),
        _layer_removal("SD2+18L", considered_layers=18, **downsampling_overrides("SD2")),
    )
}
