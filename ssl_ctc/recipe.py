"""The recipe sequence every strategy script runs: parse, prepare, fine-tune, test, benchmark.

Usage (a strategy script)::

    from ssl_ctc.benchmarking.five_tests import benchmark_experiment
    from ssl_ctc.recipe import run_recipe

    if __name__ == "__main__":
        run_recipe(MyStrategyBrain, benchmark=benchmark_experiment)
"""

import contextlib
import filecmp
import inspect
import logging
import os
import shutil
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from librispeech_prepare import DataPreparationError, check_layout, prepare_librispeech
from ssl_ctc.benchmarking.settings import BenchmarkSettings
from ssl_ctc.cpu.allocator import use_allocator
from ssl_ctc.cpu.machine import available_cpu_cores
from ssl_ctc.ctc import make_tokenizer
from ssl_ctc.data import MERGED_TRAIN_CSV, count_ctc_shortfalls, dataio_prepare
from ssl_ctc.distillation.checks import check_distillation
from ssl_ctc.distillation.teacher import Distiller
from ssl_ctc.errors import ConfigurationError
from ssl_ctc.inference.writer import write_inference_folder

logger = logging.getLogger(__name__)


def load_recipe_hparams(argv):
    """Parse the command line and load the YAML with its overrides.

    Arguments
    ---------
    argv : list of str
        Command-line arguments without the program name.

    Returns
    -------
    tuple
        ``(hparams_file, run_opts, overrides, hparams)``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    check_device(run_opts.get("device", "cpu"))
    with open(hparams_file, encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, overrides)
    cap_loader_workers(hparams)
    return hparams_file, run_opts, overrides, hparams


LOADER_OPTIONS = ("train_dataloader_opts", "valid_dataloader_opts", "test_dataloader_opts")


def cap_loader_workers(hparams, cores=None):
    """Cap each data loader's ``num_workers`` at the cores this process may use.

    More loading processes than cores only compete with the model (PyTorch warns
    about it at every loader); the YAML's 4 suit a GPU machine, not 2 cores.

    Example
    -------
    >>> hparams = {"train_dataloader_opts": {"num_workers": 4}, "test_dataloader_opts": {}}
    >>> cap_loader_workers(hparams, cores=2)
    >>> hparams["train_dataloader_opts"]
    {'num_workers': 2}
    """
    cores = available_cpu_cores() if cores is None else cores
    for key in LOADER_OPTIONS:
        options = hparams.get(key) or {}
        if options.get("num_workers", 0) > cores:
            logger.info(f"{key}: num_workers {options['num_workers']} capped at the {cores} "
                        "cores this process may use")
            options["num_workers"] = cores


def check_device(device):
    """Fail fast when ``--device cuda`` is asked for on a machine without CUDA.

    Example
    -------
    >>> check_device("cpu")
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            f"--device {device} was given but no CUDA device is available; use --device cpu"
        )


HELP_OPTIONS = ("-h", "--help")


# Set to 1 to see the traceback of a caught configuration or data error (``--debug`` too).
TRACEBACK_VARIABLE = "SSL_RECIPE_TRACEBACK"


def yaml_keys(hparams_file):
    """The top-level keys of a recipe YAML with their values and comments, in file order.

    Example
    -------
    >>> keys = dict((key, comment) for key, _, comment in yaml_keys("hparams/layer_removal.yaml"))
    >>> keys["considered_layers"]
    'keep only the first N transformer layers (1 to the depth)'
    """
    keys = []
    for line in Path(hparams_file).read_text(encoding="utf-8").splitlines():
        if not line or line[0] in " #" or ":" not in line or line.startswith("__"):
            continue
        key, _, rest = line.partition(":")
        value, _, comment = rest.partition("  #")
        keys.append((key.strip(), value.strip(), comment.strip()))
    return keys


def print_recipe_help(argv):
    """SpeechBrain's run options, then the recipe's keys from the YAML given (if any)."""
    try:
        sb.parse_arguments(["--help"])
    except SystemExit:
        pass
    yaml_files = [arg for arg in argv if arg.endswith((".yaml", ".yml")) and os.path.isfile(arg)]
    if not yaml_files:
        print("\nGive the YAML (e.g. hparams/downsampling.yaml) before --help to list its keys.")
        return
    print(f"\nRecipe keys of {yaml_files[0]} (override any with --key value):")
    for key, value, comment in yaml_keys(yaml_files[0]):
        print(f"  --{key} {value}" + (f"    # {comment}" if comment else ""))


def main(brain_class, benchmark, argv=None):
    """A strategy script's ``__main__``: ``run_recipe``, ``--help`` and errors for people.

    ``--help`` prints SpeechBrain's options and the YAML's keys with their comments,
    once. A configuration or data error (``ConfigurationError``,
    ``DataPreparationError``) prints its message alone and exits with status 2;
    the traceback with ``--debug`` or ``SSL_RECIPE_TRACEBACK=1``.

    Arguments
    ---------
    brain_class : type
        The strategy's Brain.
    benchmark : callable
        See ``run_recipe``.
    argv : list of str, optional
        Defaults to ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else argv
    if set(HELP_OPTIONS) & set(argv):
        print_recipe_help(argv)
        return
    try:
        run_recipe(brain_class, argv, benchmark=benchmark)
    except (ConfigurationError, DataPreparationError) as error:
        if "--debug" in argv or os.environ.get(TRACEBACK_VARIABLE) == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def check_brain_class(brain_class, hparams, hparams_file):
    """Stop when the script's Brain is neither the YAML's ``brain_class`` nor a subclass of it.

    Arguments
    ---------
    brain_class : type
        The Brain the script runs.
    hparams : dict
        The loaded YAML; without a ``brain_class`` key any Brain runs it.
    hparams_file : str
        The YAML, named in the error.

    Example
    -------
    >>> from ssl_ctc.brain import SSLCTCBrain
    >>> from ssl_ctc.downsampling import DownsampledBrain
    >>> check_brain_class(DownsampledBrain, {"brain_class": SSLCTCBrain}, "base.yaml")
    >>> check_brain_class(SSLCTCBrain, {"brain_class": DownsampledBrain}, "downsampling.yaml")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: brain_class of downsampling.yaml is ssl_ctc.downsampling...
    """
    expected = hparams.get("brain_class")
    if expected is None or isinstance(expected, type) and issubclass(brain_class, expected):
        return
    expected_name = (f"{expected.__module__}.{expected.__qualname__}"
                     if isinstance(expected, type) else repr(expected))
    raise ConfigurationError(
        f"brain_class of {hparams_file} is {expected_name}, but the script "
        f"({os.path.basename(sys.argv[0])}) runs {brain_class.__module__}."
        f"{brain_class.__qualname__}, which is not it nor a subclass of it: run this YAML with "
        "its strategy's script"
    )


def run_recipe(brain_class, argv=None, benchmark=None):
    """The common ``__main__`` of every strategy script, in SpeechBrain's recipe order.

    Arguments
    ---------
    brain_class : type or None
        ``SSLCTCBrain`` or a subclass; None runs the YAML's ``brain_class``.
    argv : list of str, optional
        Command line (defaults to ``sys.argv[1:]``).
    benchmark : callable, optional
        ``benchmark(brain, test_datasets, settings) -> records``, run on the main
        process after testing (the strategy scripts pass ``benchmark_experiment``,
        the five tests); without it no benchmark runs.

    Returns
    -------
    SSLCTCBrain
        The trained (or recovered) brain, with ``benchmark_records`` set on the main process.
    """
    hparams_file, run_opts, overrides, hparams = load_recipe_hparams(
        sys.argv[1:] if argv is None else argv
    )
    brain_class = brain_class or hparams["brain_class"]
    check_brain_class(brain_class, hparams, hparams_file)
    distillation = check_distillation(hparams)  # the teacher, before anything is written
    if not hparams["skip_prep"]:  # a wrong data_folder is named before its missing LM file
        check_layout(hparams["data_folder"], hparams["train_splits"] + hparams["dev_splits"]
                     + hparams["test_splits"])
    benchmark_settings = BenchmarkSettings.from_hparams(hparams)
    benchmark_settings.validate()
    logger.info(f"C allocator: {use_allocator(benchmark_settings.cpu_allocator)}")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if if_main_process():
        snapshot_calling_script(hparams["output_folder"], inspect.currentframe().f_back)
    prepare_options = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prepare_folder"],
        "tr_splits": hparams["train_splits"],
        "dev_splits": hparams["dev_splits"],
        "te_splits": hparams["test_splits"],
        "merge_lst": hparams["train_splits"],
        "merge_name": MERGED_TRAIN_CSV,
    }
    run_on_main(prepare_librispeech, kwargs={**prepare_options, "skip_prep": hparams["skip_prep"]})
    csv_paths = prepare_librispeech(**prepare_options, skip_prep=True)
    tokenizer = make_tokenizer()
    train_data, valid_data, test_datasets = dataio_prepare(hparams, csv_paths, tokenizer)

    brain = brain_class(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.tokenizer = tokenizer
    if distillation is not None:  # the teacher loads before the first epoch (on_fit_start)
        brain.use_teacher(Distiller(distillation, train_data, csv_paths[MERGED_TRAIN_CSV]))
    warn_ctc_shortfalls(brain, train_data)

    if not brain.test_only:
        brain.fit(
            brain.hparams.epoch_counter,
            train_data,
            valid_data,
            train_loader_kwargs=hparams["train_dataloader_opts"],
            valid_loader_kwargs=hparams["valid_dataloader_opts"],
        )
    for split, test_data in test_datasets.items():
        brain.test_wer_file = os.path.join(hparams["output_folder"], f"wer_{split}.txt")
        brain.evaluate(
            test_data, min_key="WER", test_loader_kwargs=hparams["test_dataloader_opts"]
        )
    brain.benchmark_records = []
    brain.release_training_state()
    if if_main_process():
        with unwrapped_modules(brain):
            if benchmark is not None:
                brain.benchmark_records = benchmark(brain, test_datasets, benchmark_settings)
            write_inference_folder(brain)  # <output_folder>/inference/, for EncoderASR
    return brain


def snapshot_calling_script(output_folder, caller_frame):
    """Keep the strategy script in the experiment folder, not this module.

    SpeechBrain's ``create_experiment_directory`` copies the file that calls it
    (here, ``ssl_ctc/recipe.py``) as the snapshot of what ran; the first file outside
    this module on the call stack (``downsampled_train.py``...) is the one that says it.

    Arguments
    ---------
    output_folder : str or Path
        The experiment folder.
    caller_frame : frame
        The frame that called ``run_recipe`` (``main`` in this module, or a script).
    """
    copied = Path(output_folder) / Path(__file__).name
    if copied.is_file() and filecmp.cmp(copied, __file__, shallow=False):
        copied.unlink()
    while caller_frame is not None and inspect.getmodule(caller_frame) is sys.modules[__name__]:
        caller_frame = caller_frame.f_back
    caller = inspect.getmodule(caller_frame)
    if caller is not None and getattr(caller, "__file__", None):
        shutil.copy(os.path.realpath(caller.__file__), output_folder)


def warn_ctc_shortfalls(brain, train_data):
    """Log a warning when the strategy leaves CTC fewer frames than characters."""
    shortfalls, total = count_ctc_shortfalls(
        train_data, brain.ctc_frames, brain.hparams.sample_rate
    )
    if shortfalls:
        logger.warning(
            f"{shortfalls} of {total} training utterances have more characters than CTC "
            f"output frames ({type(brain).__name__}); CTC cannot emit them. With "
            "downsampling, raise --ctc_upsampling_factor (the paper used 2 for factors >= 3)."
        )
    return shortfalls


@contextlib.contextmanager
def unwrapped_modules(brain):
    """Run a block with the Brain's modules taken out of their DDP or DataParallel wrappers.

    Under torchrun the benchmark runs on the main process only: a forward through
    a ``DistributedDataParallel`` wrapper there may wait for the other processes
    (buffer broadcast), and attributes set on a wrapper would miss the module.

    Arguments
    ---------
    brain : speechbrain.Brain
        Its ``modules`` entries are swapped for the wrapped modules, then restored.

    Yields
    ------
    torch.nn.ModuleDict
        ``brain.modules``, unwrapped.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    wrapped = {
        name: module for name, module in brain.modules.items() if isinstance(module, wrappers)
    }
    for name, wrapper in wrapped.items():
        brain.modules[name] = wrapper.module
    try:
        yield brain.modules
    finally:
        for name, wrapper in wrapped.items():
            brain.modules[name] = wrapper
