"""Timing helpers shared by the five tests and the speed script: precisions, autocast, sync.

Usage::

    with autocast("cpu", "bf16"):
        output = brain.infer_batch(wavs, wav_lens)
    synchronize("cpu")
"""

import contextlib
import dataclasses
import resource
import sys
import time

import torch

# int8: no autocast; ``ssl_ctc.cpu_inference`` runs the linear layers in int8.
CPU_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "int8": None}


GPU_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def synchronize(device):
    """Waits for the GPU's queued work, so that a timer read is true."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def autocast(device, precision):
    """Autocast context for a precision name ("fp32": none)."""
    dtype = (GPU_PRECISIONS if device.startswith("cuda") else CPU_PRECISIONS)[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def peak_memory(device):
    """Peak memory in MiB, and what it measures."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kibibytes on Linux, bytes on macOS.
    divisor = 2**20 if sys.platform == "darwin" else 2**10
    return peak_rss / divisor, "process_peak_rss"


@dataclasses.dataclass
class TimedEntry:
    """One thing timed in the round-robin: a function applied to every batch.

    Arguments
    ---------
    label : str
        Row label.
    run_batch : callable
        ``run_batch(wavs, wav_lens)``; its output is discarded.
    precision : str
        Autocast precision of the pass.
    threads : int
        CPU threads of the pass.
    """

    label: str
    run_batch: object
    precision: str
    threads: int

    def time_pass(self, batches, device):
        """Wall and process CPU seconds to run the batches once (inference mode, autocast).

        CPU time counts only what this process's threads ran, so it moves less
        than wall time when other jobs share the cores.

        Returns
        -------
        tuple of float
            ``(wall_seconds, cpu_seconds)``.
        """
        torch.set_num_threads(self.threads)
        with torch.inference_mode(), autocast(device, self.precision):
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for wavs, wav_lens in batches:
                self.run_batch(wavs, wav_lens)
            synchronize(device)
            return time.perf_counter() - wall, time.process_time() - cpu


def round_robin(entries, batches, repeats, device, warmup_batches):
    """Time every entry over every batch, interleaved batch by batch, ``repeats`` times.

    Within a repeat, each batch goes through every entry before the next batch,
    so that the entries compared are timed minutes apart at most, under the
    same background load; each repeat starts one entry later than the previous
    one, so that no entry always runs first or after the same one.

    Arguments
    ---------
    entries : list of TimedEntry
        What to time.
    batches : list of tuple
        ``(wavs, wav_lens)`` on the device.
    repeats : int
        Passes per entry.
    device : str
        Where the batches are.
    warmup_batches : int
        Untimed batches per entry before the first repeat.

    Returns
    -------
    wall : dict
        Label -> wall seconds of each repeat (every batch once).
    cpu : dict
        Label -> process CPU seconds of each repeat.

    Example
    -------
    >>> entries = [TimedEntry(name, lambda wavs, lens: wavs.sum(), "fp32", 1) for name in "ab"]
    >>> wall, cpu = round_robin(entries, [(torch.ones(2, 8), torch.ones(2))] * 2, 3, "cpu", 1)
    >>> sorted(wall), [len(seconds) for seconds in cpu.values()]
    (['a', 'b'], [3, 3])
    """
    for entry in entries:
        entry.time_pass(batches[:warmup_batches], device)
    wall = {entry.label: [] for entry in entries}
    cpu = {entry.label: [] for entry in entries}
    for repeat in range(repeats):
        start = repeat % len(entries)
        order = entries[start:] + entries[:start]
        for label in wall:
            wall[label].append(0.0)
            cpu[label].append(0.0)
        for batch in batches:
            for entry in order:
                wall_seconds, cpu_seconds = entry.time_pass([batch], device)
                wall[entry.label][-1] += wall_seconds
                cpu[entry.label][-1] += cpu_seconds
    return wall, cpu
