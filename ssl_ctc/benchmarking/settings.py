"""What the five tests run with, read from the recipe's YAML and checked before training.

Usage::

    settings = BenchmarkSettings.from_hparams(hparams)
    settings.validate()
"""

import dataclasses
import importlib
import math
import re
from pathlib import Path

from ssl_ctc.cpu.allocator import CPU_ALLOCATORS
from ssl_ctc.errors import MissingFileError
from ssl_ctc.lm_decoding import LM_DEFAULTS, LM_PACKAGES, is_arpa
from ssl_ctc.precision import CPU_PRECISIONS, GPU_PRECISIONS

PAPER_TEST_BATCH_SIZE = 4  # the paper's test batches
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclasses.dataclass
class BenchmarkSettings:
    """What the five tests run with; read from the recipe's YAML.

    Arguments
    ---------
    batch_size : int
        Test batch size (YAML ``benchmark_batch_size``; 4 in the paper).
    devices : list of str
        Devices of the timed tests (``benchmark_devices``): "cuda", "cuda:N",
        "cpu". A listed GPU without CUDA available gives skipped records.
    cpu_threads : int, optional
        ``torch.set_num_threads`` during the CPU tests (``benchmark_cpu_threads``);
        None takes the cores this process may use (its CPU affinity), not torch's
        current number (torchrun sets OMP_NUM_THREADS=1). Always recorded.
    warmup_batches : int
        Untimed batches, the longest of the test set, before the timed passes
        (``benchmark_warmup_batches``).
    timed_passes : int
        Timed passes over the test set, the median reported and every pass's time
        recorded (``benchmark_timed_passes``; 1 for real test sets, 3 on the embedded one).
    cpu_allocator : str
        The program's C allocator (``cpu_allocator``, see ``ssl_ctc.cpu.allocator``):
        "keep_freed" (glibc keeps freed memory for the next batch) or "system"; applied by
        the strategy scripts at start, recorded in every CPU record.
    cpu_precision : str
        "fp32", "bf16" (autocast), "int8" (dynamic) or "auto" (bf16 where the CPU has bf16
        instructions and it measures faster) on CPU (``benchmark_cpu_precision``); the
        linear layers run through ``ssl_ctc.cpu.decision``.
    gpu_precision : str
        "fp32", "fp16" or "bf16" (autocast) on GPU (``benchmark_gpu_precision``).
    mac_batches : int, optional
        Number of test batches whose MACs are counted (``benchmark_mac_batches``);
        None counts every batch.
    lm_path : str, optional
        KenLM model, ARPA (.arpa, .arpa.gz) or binary (``lm_path``); None skips
        the LM tests.
    lm_unigrams_path : str, optional
        Text file of the LM's words, needed with a binary LM (``lm_unigrams_path``).
    lm_alpha : float
        LM weight of the shallow fusion (``lm_alpha``).
    lm_beta : float
        Word insertion bonus (``lm_beta``).
    lm_beam_width : int
        Beam width (``lm_beam_width``; 100 is pyctcdecode's default).
    lm_decode_workers : int
        Processes that run the beam search (``lm_decode_workers``); 1 decodes
        in the main process.

    Example
    -------
    >>> settings = BenchmarkSettings.from_hparams({"benchmark_batch_size": 8})
    >>> settings.batch_size, settings.devices, settings.lm_alpha
    (8, ['cuda', 'cpu'], 0.5)
    >>> settings.validate()
    """

    batch_size: int = PAPER_TEST_BATCH_SIZE
    devices: list = dataclasses.field(default_factory=lambda: ["cuda", "cpu"])
    cpu_threads: int | None = None
    warmup_batches: int = 2
    timed_passes: int = 1
    cpu_allocator: str = "keep_freed"
    cpu_precision: str = "fp32"
    gpu_precision: str = "fp32"
    mac_batches: int | None = None
    lm_path: str | None = None
    lm_unigrams_path: str | None = None
    lm_alpha: float = LM_DEFAULTS["lm_alpha"]
    lm_beta: float = LM_DEFAULTS["lm_beta"]
    lm_beam_width: int = LM_DEFAULTS["lm_beam_width"]
    lm_decode_workers: int = 2

    # Field name -> YAML key.
    HPARAM_KEYS = {
        "batch_size": "benchmark_batch_size",
        "devices": "benchmark_devices",
        "cpu_threads": "benchmark_cpu_threads",
        "warmup_batches": "benchmark_warmup_batches",
        "timed_passes": "benchmark_timed_passes",
        "cpu_allocator": "cpu_allocator",
        "cpu_precision": "benchmark_cpu_precision",
        "gpu_precision": "benchmark_gpu_precision",
        "mac_batches": "benchmark_mac_batches",
        "lm_path": "lm_path",
        "lm_unigrams_path": "lm_unigrams_path",
        "lm_alpha": "lm_alpha",
        "lm_beta": "lm_beta",
        "lm_beam_width": "lm_beam_width",
        "lm_decode_workers": "lm_decode_workers",
    }

    @classmethod
    def from_hparams(cls, hparams):
        """Reads the settings from a hyperparameter dict, with defaults for
        absent keys (see the class arguments for the keys)."""
        values = {field: hparams[key] for field, key in cls.HPARAM_KEYS.items() if key in hparams}
        if isinstance(values.get("devices"), str):
            values["devices"] = [values["devices"]]
        for path_field in ("lm_path", "lm_unigrams_path"):
            if values.get(path_field) is not None:
                values[path_field] = str(values[path_field])
        return cls(**values)

    def validate(self):
        """Fails fast on settings that would only break the tests at the end
        of training.

        Raises
        ------
        ValueError
            A value out of range or an unknown device or precision name.
        FileNotFoundError
            ``lm_path`` or ``lm_unigrams_path`` names no file.
        ImportError
            An LM is configured but kenlm or pyctcdecode cannot be imported.

        Example
        -------
        >>> BenchmarkSettings(batch_size=0).validate()
        Traceback (most recent call last):
        ...
        ValueError: benchmark_batch_size must be a positive integer, got 0
        """
        for field in ("batch_size", "timed_passes", "lm_beam_width", "lm_decode_workers"):
            self._check_integer(field, getattr(self, field), minimum=1)
        self._check_integer("warmup_batches", self.warmup_batches, minimum=0)
        for field in ("cpu_threads", "mac_batches"):
            if getattr(self, field) is not None:
                self._check_integer(field, getattr(self, field), minimum=1)
        for device in self.devices:
            if not DEVICE_PATTERN.match(str(device)):
                raise ValueError(
                    f"{self.HPARAM_KEYS['devices']}: unknown device {device!r} "
                    "(expected 'cpu', 'cuda' or 'cuda:N')"
                )
        for field, known in (
            ("cpu_precision", CPU_PRECISIONS),
            ("gpu_precision", GPU_PRECISIONS),
        ):
            if getattr(self, field) not in known:
                raise ValueError(
                    f"{self.HPARAM_KEYS[field]}: unknown precision "
                    f"{getattr(self, field)!r} (expected one of {sorted(known)})"
                )
        if self.cpu_allocator not in CPU_ALLOCATORS:
            raise ValueError(f"cpu_allocator: unknown setting {self.cpu_allocator!r} "
                             f"(expected one of {CPU_ALLOCATORS})")
        for field in ("lm_alpha", "lm_beta"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"{self.HPARAM_KEYS[field]} must be a finite number, got {value!r}"
                )
        if self.lm_path is not None:
            self._validate_lm()

    def _check_integer(self, field, value, minimum):
        """Raises a ValueError naming the YAML key unless value is an
        integer >= minimum."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "a positive" if minimum == 1 else "a non-negative"
            raise ValueError(f"{self.HPARAM_KEYS[field]} must be {kind} integer, got {value!r}")

    def _validate_lm(self):
        """Checks the LM files and packages."""
        if not Path(self.lm_path).is_file():
            raise MissingFileError(f"lm_path: no such file: {self.lm_path}")
        if self.lm_unigrams_path is not None:
            if not Path(self.lm_unigrams_path).is_file():
                raise MissingFileError(
                    f"lm_unigrams_path: no such file: {self.lm_unigrams_path}")
        elif not is_arpa(self.lm_path):
            raise ValueError(
                f"lm_unigrams_path is needed with a binary KenLM model "
                f"(lm_path={self.lm_path}): a text file of the LM's words"
            )
        for package in LM_PACKAGES:
            try:
                importlib.import_module(package)
            except ImportError as error:
                raise ImportError(
                    f"lm_path={self.lm_path} needs the '{package}' package "
                    f"(pip install {package}): {error}"
                ) from error
