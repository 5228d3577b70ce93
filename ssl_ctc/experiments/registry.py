"""The experiment registry: every row the recipe runs, by name, written once as data.

A row is a strategy script with its recipe YAML and the overrides that make it
(``Row``). The paper's grid (``GRID``, ``reproduce_paper.py``), its embedded
version (``EMBEDDED_GRID``, ``--embedded``), the demo (``DEMO_PARTS``,
``make demo``), the speed script's variants (``SPEED_VARIANTS``), the GPU check
(``GPU_CHECK``) and the distillation demo (``DISTILLATION_STUDENTS``) take their
rows from here, by name; the embedded default's overrides (``EMBEDDED_OVERRIDES``)
and the downsampling techniques' abbreviations (``TECHNIQUE_ABBREVIATIONS``) live
here too. A row's Brain is its YAML's ``brain_class``. Adding a row, or changing the
demo, is a change to this file only. Nothing heavy is imported here.

Usage::

    rows = rows_named(EMBEDDED_GRID, DEMO_PARTS["downsampling"])
    command = ["python", *rows[0].recipe, *rows[0].arguments()]
"""

import dataclasses
import os
import shlex

RECIPE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (strategy script, YAML), relative to the recipe folder
DOWNSAMPLING = ("downsampled_train.py", "hparams/downsampling.yaml")  # = sig_down8000.yaml
LAYER_REMOVAL = ("layer_removal.py", "hparams/layer_removal.yaml")
EARLY_EXIT = ("early_exiting.py", "hparams/early_exiting/early_exits.yaml")

# The downsampling techniques (the YAML's downsampling_technique) and the prefix of their rows'
# names in the paper's table: SD2, AV3, CL4. A new technique is a class in the YAML plus its
# abbreviation here.
TECHNIQUE_ABBREVIATIONS = {"signal_downsampling": "SD", "averaging": "AV", "convolutional": "CL"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: a strategy script run into ``<output_root>/<name>``.

    ``overrides`` is a shell-quoted string; ``{output_root}`` in it is replaced by the
    output root. ``needs`` names the row whose trained model this one tests.
    """

    name: str
    group: str
    recipe: tuple
    overrides: str
    needs: str | None = None

    def arguments(self, output_root=""):
        """The overrides as command-line arguments.

        Example
        -------
        >>> Row("EE", "early_exit", EARLY_EXIT, "'--exit_layers=[1, 2]' --save_folder "
        ...     "{output_root}/EE/save").arguments("/results")
        ['--exit_layers=[1, 2]', '--save_folder', '/results/EE/save']
        """
        return shlex.split(self.overrides.replace("{output_root}", str(output_root)))


def technique_of(row_name):
    """The downsampling technique of a row named like ``SD2``; None for another row.

    Example
    -------
    >>> technique_of("CL3"), technique_of("18L")
    ('convolutional', None)
    """
    return next((technique for technique, abbreviation in TECHNIQUE_ABBREVIATIONS.items()
                 if row_name.startswith(abbreviation)), None)


def downsampling_overrides(name):
    """The overrides of a downsampling row named like ``SD2`` or ``CL3``.

    Example
    -------
    >>> downsampling_overrides("CL3")
    '--downsampling_technique convolutional --downsampling_factor 3'
    """
    return f"--downsampling_technique {technique_of(name)} --downsampling_factor {int(name[2:])}"


def _downsampling_row(name, epochs=None):
    """A downsampling row, with ``--number_of_epochs`` when ``epochs`` is given."""
    epochs = "" if epochs is None else f" --number_of_epochs {epochs}"
    return Row(name, name[:2], DOWNSAMPLING, downsampling_overrides(name) + epochs)


def rows_named(rows, names):
    """The rows of ``rows`` called ``names``, in the order of ``names``.

    Example
    -------
    >>> [row.overrides for row in rows_named(GRID, ["baseline"])]
    ['--downsampling_factor 1']
    """
    by_name = {row.name: row for row in rows}
    return [by_name[name] for name in names]


# Groups of rows that gather other groups (reproduce_paper.py --only downsampling).
GROUP_ALIASES = {"downsampling": ("baseline", *TECHNIQUE_ABBREVIATIONS.values())}

# The paper's grid (reproduce_paper.py). Epochs: the authors' where docs/paper.md lists them (SD2
# 15, AV2 10, SD3 10, CL2 12, CL4 25, AV4 25, layer removal 10, early exit 20), else the YAML's
# 15. Early exit trains once (EE-entropy); EE-similarity tests its checkpoints (--test_only, same
# save folder) with the other criterion. Thresholds: the paper's sweeps (entropy 0.01-0.10 nats,
# the authors' 0.10; cosine similarity 0.90-0.99, the authors' 0.95).
EE_TRAINED = "--save_folder {output_root}/EE-entropy/save"
BASELINE = Row("baseline", "baseline", DOWNSAMPLING, "--downsampling_factor 1")
DOWNSAMPLING_ROWS = (BASELINE, *(_downsampling_row(name, epochs) for name, epochs in (
    ("CL2", 12), ("CL3", None), ("CL4", 25), ("AV2", 10), ("AV3", None), ("AV4", 25),
    ("SD2", 15), ("SD3", 10), ("SD4", None))))
GRID = (
    *DOWNSAMPLING_ROWS,
    *(Row(f"{layers}L", "layer_removal", LAYER_REMOVAL,
          f"--considered_layers {layers} --number_of_epochs 10") for layers in range(24, 11, -2)),
    Row("EE-entropy", "early_exit", EARLY_EXIT,
        "--exit_criterion entropy --exit_threshold 0.1 "
        "'--exit_threshold_sweep=[0.01, 0.02, 0.05, 0.1]' --number_of_epochs 20"),
    Row("EE-similarity", "early_exit", EARLY_EXIT,
        "--test_only --exit_criterion similarity --exit_threshold 0.95 "
        f"'--exit_threshold_sweep=[0.9, 0.93, 0.95, 0.97, 0.99]' {EE_TRAINED}",
        needs="EE-entropy"),
)

# The embedded grid (reproduce_paper.py --embedded, and the demo's rows): the same downsampling
# rows; the 4-layer seed encoder's depths; exits on its 4 layers, with thresholds that reach its
# early layers (its entropies are higher than WavLM Large's after a short training).
EMBEDDED_GRID = (
    *DOWNSAMPLING_ROWS,
    *(Row(f"{layers}L", "layer_removal", LAYER_REMOVAL, f"--considered_layers {layers}")
      for layers in range(4, 0, -1)),
    Row("EE-entropy", "early_exit", EARLY_EXIT,
        "'--exit_layers=[1, 2, 3, 4]' --exit_criterion entropy --exit_threshold 0.2 "
        "'--exit_threshold_sweep=[0.05, 0.1, 0.4, 0.8]'"),
    Row("EE-similarity", "early_exit", EARLY_EXIT,
        "--test_only '--exit_layers=[1, 2, 3, 4]' --exit_criterion similarity "
        f"--exit_threshold 0.95 '--exit_threshold_sweep=[0.9, 0.99]' {EE_TRAINED}",
        needs="EE-entropy"),
)

# Overrides that adapt the paper's setup to the tiny seed encoder and 2 CPU cores (the demo;
# with EMBEDDED_GRID_EXTRA, the embedded grid). What differs from the paper
# (hparams/downsampling.yaml): 8 epochs instead of 15 (the paper: 10-25), batches of 8 (6), a
# 256-unit head block (1024), the head on Adam at 2e-3 instead of Adadelta at 0.9, and the
# encoder on Adam at 5e-5 instead of 1e-4; NewBob annealing on the validation loss as in the
# paper. (The head's first epoch runs at Adam's default 1e-3: replacing model_opt_class drops the
# YAML's lr argument, and NewBob sets --lr only from the second epoch on.)
EMBEDDED_OVERRIDES = [
    "--data_folder", os.path.join(RECIPE, "embedded", "LibriSpeech"),
    "--ssl_hub", os.path.join(RECIPE, "embedded", "seed_wavlm"),
    "--test_splits=[test-clean]",
    "--number_of_epochs", "8",
    "--batch_size", "8",
    "--dnn_neurons", "256",
    # The seed encoder was pre-trained (supervised CTC) on 184 voices; fine-tuning it faster
    # on train-clean-100's 12 voices overfits them (at 5e-4 the validation loss stopped
    # falling after epoch 4 while the training loss fell from 0.18 to 0.07), while a fresh head
    # needs a high rate to leave CTC's blank plateau within the first epochs: the paper's
    # Adadelta at 0.9 stays on blanks for many epochs.
    "--lr_ssl", "0.00005",
    "--model_opt_class=!name:torch.optim.Adam",
    "--lr", "0.002",
    "--benchmark_cpu_threads", "2",
    "--lm_beam_width", "32",
    # a 0.3 s test is one noisy sample: the median of 3 timed passes
    "--benchmark_timed_passes", "3",
]
# The embedded grid at tiny scale: the demo's overrides with fewer epochs (the 16 rows took 380 s
# on 2 quiet CPU cores, 65 min with other work on the cores, docs/RESULTS.md); CPU tests only.
EMBEDDED_GRID_EXTRA = ["--number_of_epochs", "3", "--benchmark_devices=[cpu]"]

# The demo (tools/run_demo.py, make demo): rows of EMBEDDED_GRID by part, with
# EMBEDDED_OVERRIDES; the default part is the first.
DEMO_PARTS = {
    "downsampling": ("baseline", "SD2", "CL3"),
    "layer_removal": ("4L", "2L"),
    "early_exit": ("EE-entropy",),
}

# The speed script's variants (speed_benchmark.py --variants), on a WavLM-Large-shaped encoder.
SPEED_VARIANTS = (
    BASELINE,
    *(Row(name, name[:2], DOWNSAMPLING, downsampling_overrides(name))
      for name in ("SD2", "SD3", "AV2", "CL2", "CL3")),
    Row("18L", "layer_removal", LAYER_REMOVAL, "--considered_layers 18 --downsampling_factor 1"),
    Row("12L", "layer_removal", LAYER_REMOVAL, "--considered_layers 12 --downsampling_factor 1"),
    Row("EE18", "early_exit", EARLY_EXIT, "--exit_criterion fixed --exit_layer 18"),
    Row("SD2+18L", "layer_removal", LAYER_REMOVAL,
        f"--considered_layers 18 {downsampling_overrides('SD2')}"),
)

# The GPU check (tools/gpu_check.py, make gpu-check); 18 layers and exit 18 assume 24 layers.
GPU_CHECK = (
    BASELINE,
    Row("SD2", "SD", DOWNSAMPLING, "--downsampling_factor 2"),
    Row("CL3", "CL", DOWNSAMPLING, downsampling_overrides("CL3")),
    Row("18L", "layer_removal", LAYER_REMOVAL, "--considered_layers 18"),
    Row("EE", "early_exit", EARLY_EXIT, "'--exit_layers=[12, 18, 24]' --exit_threshold 0.5"),
)

# The distillation demo's students (tools/run_distillation_demo.py; the teacher is the demo's
# baseline): the downsampled rows, also with as many CTC frames per encoder frame as give the
# teacher's frame rate, the encoder cut to 2 layers, and early exit.
DISTILLATION_STUDENTS = (
    *(Row(name, name[:2], DOWNSAMPLING, downsampling_overrides(name))
      for name in ("SD2", "CL3", "SD4")),
    Row("2L", "layer_removal", LAYER_REMOVAL, "--considered_layers 2 --downsampling_factor 1"),
    Row("EE", "early_exit", EARLY_EXIT,
        "'--exit_layers=[1, 2, 3, 4]' --exit_threshold 0.2 '--exit_threshold_sweep=[]'"),
    *(Row(f"{name}-CTCx{name[2:]}", name[:2], DOWNSAMPLING,
          f"{downsampling_overrides(name)} --ctc_upsampling_factor {name[2:]}")
      for name in ("SD2", "CL3", "SD4")),
)
