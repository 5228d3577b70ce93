"""The teacher of a training run: a fast variant learns from a finished, full fine-tuned model.

Any strategy script trains its student against a teacher, a finished experiment of this
recipe, with the loss ``(1 - w) * CTC + w * T^2 * KL(teacher_T || student_T)``: the
KL divergence between the teacher's and the student's posteriors softened by the
temperature ``T``, averaged over each utterance's valid frames, then over the batch.
Where the student emits CTC frames at another rate than the teacher (downsampling),
its target on a frame is what the teacher emits within that frame's span of input
samples (``span_log_posteriors``). The teacher runs frozen, in inference mode, once per
training utterance: its posteriors are cached in the student's save folder before
the first epoch (``distillation_cache``), or computed batch by batch.

What trained the student is kept: the teacher's identity (folder, name, checkpoint,
weights hash, test WER) goes to ``save/distillation_teacher.json``, to every
benchmark record (``experiment_tags``, the name suffixed ``+KD``) and to the model
card of the inference folder.

Usage::

    python downsampled_train.py hparams/downsampling.yaml --data_folder /path/to/LibriSpeech \\
        --output_folder results/SD2_KD --teacher results/baseline \\
        --distillation_weight 0.25 --distillation_temperature 1

Authors
 * Recipe team 2026
"""

import gc
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from ssl_ctc.benchmarking.records import latest_records
from ssl_ctc.data import make_test_loader
from ssl_ctc.distillation.checks import TEACHER_RECORD, read_teacher_record
from ssl_ctc.distillation.loss import (
    alignment_name,
    distillation_loss,
    frame_rate_advice,
)
from ssl_ctc.errors import ConfigurationError
from ssl_ctc.files import write_atomically
from ssl_ctc.inference.loading import (
    load_experiment_brain,
)
from ssl_ctc.names import DISTILLED_NAME_SUFFIX, RESULTS_JSON

logger = logging.getLogger(__name__)

# In the student's save folder: the teacher's cached posteriors (its record: TEACHER_RECORD).
CACHE_FILE = "teacher_posteriors.pt"
# Bumped when the cache file's content changes meaning.
CACHE_FORMAT_VERSION = 1


def weights_sha256(modules):
    """SHA-256 of a module's parameters and buffers, in key order: the teacher's identity.

    Example
    -------
    >>> torch.manual_seed(0) is not None
    True
    >>> layer = torch.nn.Linear(2, 2)
    >>> weights_sha256(layer) == weights_sha256(torch.nn.Linear(2, 2))
    False
    >>> len(weights_sha256(layer))
    64
    """
    digest = hashlib.sha256()
    for key, value in sorted(modules.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def file_sha256(path):
    """SHA-256 of a file's bytes (the training CSV keys the cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as opened:
        for block in iter(lambda: opened.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_test_wers(folder, name):
    """Greedy test WER per test set from the teacher's benchmark.json (its latest measured)."""
    records = json.loads((Path(folder) / RESULTS_JSON).read_text(encoding="utf-8"))
    named = [record for record in records if record.get("name") == name] or records
    latest = latest_records([record for record in named if record.get("status") == "ok"])
    return {test_set: record["wer"] for (test_set, test), record in sorted(latest.items())
            if test in ("cpu_greedy", "gpu_greedy")}


def load_teacher(folder, device):
    """The teacher's Brain, best checkpoint loaded, frozen, in eval mode on ``device``.

    Its YAML seeds torch's generators when loaded; the student's random state is
    restored, so a distilled run draws what the plain run draws.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        teacher = load_experiment_brain(folder, device)
    teacher.modules.eval()
    teacher.modules.requires_grad_(False)
    return teacher


class Distiller:
    """The teacher of a training run: its posteriors per batch and the loss term they give.

    Arguments
    ---------
    settings : ssl_ctc.distillation.checks.DistillationSettings
        From ``check_distillation``.
    train_data : speechbrain.dataio.dataset.DynamicItemDataset
        The student's training set (``id``, ``sig``, ``wrd``, ``duration``).
    train_csv : str or Path
        Its CSV manifest: its hash keys the cache.
    """

    def __init__(self, settings, train_data, train_csv):
        self.settings = settings
        self.train_data = train_data
        self.train_csv = Path(train_csv)
        self.teacher = None
        self.cache = None
        self.record = read_teacher_record(settings.save_folder)

    def prepare(self, student):
        """Before the first epoch: load the teacher, record it, and cache its posteriors.

        Raises ``ConfigurationError`` when the teacher's weights changed since this
        student's training started.
        """
        start = time.perf_counter()
        teacher = load_teacher(self.settings.teacher, student.device)
        tags = teacher.experiment_tags()
        checkpoint = teacher.checkpointer.find_checkpoint(min_key="WER")
        student_stride, teacher_stride = student.frame_grid()[1], teacher.frame_grid()[1]
        record = {
            "teacher": str(self.settings.teacher),
            "teacher_name": tags["name"],
            "teacher_strategy": tags["strategy"],
            "teacher_brain_class": tags["brain_class"],
            "teacher_checkpoint": checkpoint.path.name,
            "teacher_weights_sha256": weights_sha256(teacher.modules),
            "teacher_wer": teacher_test_wers(self.settings.teacher, tags["name"]),
            "teacher_frame_stride": teacher_stride,
            "student_frame_stride": student_stride,
            "distillation_weight": self.settings.weight,
            "distillation_temperature": self.settings.temperature,
            "distillation_alignment": alignment_name(student_stride, teacher_stride),
            "distillation_cache": self.settings.cache,
        }
        previous = self.record
        if previous is not None and (previous["teacher_weights_sha256"]
                                     != record["teacher_weights_sha256"]):
            raise ConfigurationError(
                f"teacher '{self.settings.teacher}' changed since this student's training "
                f"started (weights sha256 {record['teacher_weights_sha256'][:12]}, was "
                f"{previous['teacher_weights_sha256'][:12]} in "
                f"{self.settings.save_folder / TEACHER_RECORD}): give a new --output_folder"
            )
        self.record = record
        if if_main_process():
            write_atomically(self.settings.save_folder / TEACHER_RECORD,
                             json.dumps(record, indent=2) + "\n")
        self.teacher = teacher
        if self.settings.cache:
            run_on_main(self.fill_cache)
            self.cache = load_cache(self.settings.save_folder / CACHE_FILE)["log_probs"]
            self.teacher = None  # its cost is paid: free its memory for the student
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if student_stride != teacher_stride:
            upsampling = getattr(student.hparams, "ctc_upsampling_factor", 1)
            logger.warning(frame_rate_advice(student_stride, teacher_stride, upsampling))
        logger.info(f"distilling from teacher {record['teacher']} ({record['teacher_name']}, "
                    f"{record['distillation_alignment']}), ready in "
                    f"{time.perf_counter() - start:.1f} s")

    def cache_key(self):
        """What the cached posteriors depend on: the teacher's weights and the training CSV."""
        return {"format_version": CACHE_FORMAT_VERSION,
                "teacher_weights_sha256": self.record["teacher_weights_sha256"],
                "train_csv_sha256": file_sha256(self.train_csv)}

    def fill_cache(self):
        """Compute the teacher's log-probs of every training utterance, unless the cache is fresh.

        The cache file is kept while its key (``cache_key``) holds; a changed teacher
        or training CSV rewrites it.
        """
        path = self.settings.save_folder / CACHE_FILE
        key = self.cache_key()
        stale = cache_staleness(path, key)
        if stale is None:
            logger.info(f"teacher posteriors: cache '{path}' is up to date")
            return
        logger.info(f"teacher posteriors: computing the cache ({stale})")
        start = time.perf_counter()
        log_probs = {}
        batch_size = self.teacher.hparams.test_batch_size
        with torch.no_grad():
            for batch in make_test_loader(self.train_data, batch_size):
                batch = batch.to(self.teacher.device)
                output = self.teacher.infer_batch(*batch.sig)
                for utterance, frames, length in zip(batch.id, output["log_probs"],
                                                      output["lengths"].tolist(), strict=True):
                    log_probs[utterance] = frames[:length].to("cpu", torch.float16).clone()
        temporary = path.with_name(path.name + ".tmp")
        torch.save({**key, "log_probs": log_probs}, temporary)
        os.replace(temporary, path)
        logger.info(f"teacher posteriors of {len(log_probs)} utterances cached in "
                    f"{time.perf_counter() - start:.1f} s: {path}")

    def teacher_outputs(self, batch):
        """The teacher's log-probs ``[B, T, V]`` (float32) and valid frames ``[B]`` for a batch."""
        if self.cache is not None:
            frames = [self.cache[utterance] for utterance in batch.id]
            lengths = torch.tensor([len(utterance) for utterance in frames])
            log_probs = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
            device = batch.sig[0].device
            return log_probs.to(device, torch.float32), lengths.to(device)
        with torch.no_grad():
            output = self.teacher.infer_batch(*batch.sig)
        return output["log_probs"].float(), output["lengths"]

    def mix(self, ctc_loss, predictions, student_stride):
        """``(1 - w) * CTC + w * T^2 * KL`` for predictions holding the batch's ``teacher``."""
        teacher_log_probs, teacher_lengths = predictions["teacher"]
        kd_loss = distillation_loss(
            predictions["log_probs"], predictions["lengths"], teacher_log_probs, teacher_lengths,
            self.settings.temperature, student_stride, self.record["teacher_frame_stride"],
            self.settings.blank_index)
        weight = self.settings.weight
        return (1 - weight) * ctc_loss + weight * kd_loss

    def tags(self, tags):
        """A strategy's tags with the teacher's identity, once the student trained with it.

        The name gets ``DISTILLED_NAME_SUFFIX`` (``SD2 +KD``) and the strategy ``+distillation``,
        so that ``benchmark.py summarize`` keeps distilled and plain rows apart.
        """
        if self.record is None:  # never trained with the teacher (--test_only on a new folder)
            return tags
        return {
            **tags,
            **self.record,
            "name": tags["name"] + DISTILLED_NAME_SUFFIX,
            "strategy": f"{tags['strategy']}+distillation",
            "label": f"{tags['label']} KD",
            "baseline": False,
        }

    def card_lines(self):
        """The model card's line on the teacher (a Markdown item), once the student trained."""
        record = self.record
        if record is None:
            return []
        wers = ", ".join(f"{test_set} {wer:.2f}" for test_set, wer in record["teacher_wer"].items())
        return [
            f"- distilled from the teacher `{record['teacher']}` ({record['teacher_name']}, "
            f"checkpoint `{record['teacher_checkpoint']}`, weights sha256 "
            f"`{record['teacher_weights_sha256'][:16]}`, greedy test WER {wers or '-'}): loss "
            f"(1 - {record['distillation_weight']:g}) CTC + {record['distillation_weight']:g} "
            f"T^2 KL at T = {record['distillation_temperature']:g}, "
            f"{record['distillation_alignment']}"
        ]


def cache_staleness(path, key):
    """Why the cache file at ``path`` cannot serve ``key``, or None when it can.

    Example
    -------
    >>> cache_staleness(Path("/nonexistent/teacher_posteriors.pt"), {"format_version": 1})
    'no cache file'
    """
    if not path.is_file():
        return "no cache file"
    try:
        cached = load_cache(path)
    except (OSError, RuntimeError, ValueError) as error:
        return f"unreadable cache file ({error})"
    changed = [name for name, value in key.items() if cached.get(name) != value]
    return f"{', '.join(changed)} changed" if changed else None


def load_cache(path):
    """A cache file, memory-mapped (the posteriors are read as batches need them)."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
