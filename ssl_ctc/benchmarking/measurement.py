"""Measuring the five tests and the speed script: GPU sync, peak memory, timed passes.

Usage::

    with PeakMemory("cpu") as memory:
        output = brain.infer_batch(wavs, wav_lens)
    synchronize("cpu")
    memory.peak_mb
"""

import dataclasses
import resource
import sys
import threading
import time
from pathlib import Path

import torch

from ssl_ctc.cpu.allocator import release_freed_memory
from ssl_ctc.precision import autocast


def synchronize(device):
    """Waits for the GPU's queued work, so that a timer read is true."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
_RSS_SAMPLE_SECONDS = 0.005


def _proc_status_kib(field):
    """A ``/proc/self/status`` field in KiB (VmRSS: resident now; VmHWM: its peak)."""
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if not possible."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """The peak memory of a block above what was resident when it started, in MiB.

    On GPU: ``torch.cuda.max_memory_allocated`` over the block minus what was
    allocated at its start (the model's weights). On CPU: the process's peak
    resident set size over the block (the kernel's VmHWM, reset at the start,
    or RSS sampled every 5 ms where it cannot be reset) minus the RSS at the
    start, after the free memory the C allocator keeps (``ssl_ctc.cpu.allocator``) is
    given back, so that what the block reuses counts; memory of other processes (LM
    decoding workers) is not included.

    Arguments
    ---------
    device : str
        "cpu" or "cuda[:N]".

    Example
    -------
    >>> with PeakMemory("cpu") as memory:
    ...     block = torch.ones(512, 2**20 // 4)  # 512 MiB, more than earlier frees could cache
    >>> memory.peak_mb > 256, memory.kind
    (True, 'process_rss_peak_above_start')
    """

    def __init__(self, device):
        self.device = device
        self.peak_mb = self.resident_before_mb = None
        self.kind = None
        self._sampler = self._stop = None
        self._sampled_peak_kib = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.resident_before_mb = self._before / 2**20
            self.kind = "cuda_max_allocated_above_start"
            return self
        if not _PROC_STATUS.exists():  # no /proc: the process's peak since it started
            self.kind = "process_peak_rss_since_start"
            return self
        release_freed_memory()
        self._before = _proc_status_kib("VmRSS")
        self.resident_before_mb = self._before / 2**10
        self.kind = "process_rss_peak_above_start"
        if not _reset_peak_rss():
            self._stop = threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self):
        """Track the largest RSS until stopped (where VmHWM cannot be reset)."""
        while not self._stop.wait(_RSS_SAMPLE_SECONDS):
            self._sampled_peak_kib = max(self._sampled_peak_kib, _proc_status_kib("VmRSS"))

    def __exit__(self, *exception):
        if self.kind == "cuda_max_allocated_above_start":
            synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
        elif self.kind == "process_peak_rss_since_start":
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            # ru_maxrss is in kibibytes on Linux, bytes on macOS.
            self.peak_mb = peak_rss / (2**20 if sys.platform == "darwin" else 2**10)
        else:
            if self._sampler is not None:
                self._stop.set()
                self._sampler.join()
                peak_kib = max(self._sampled_peak_kib, _proc_status_kib("VmRSS"))
            else:
                peak_kib = _proc_status_kib("VmHWM")
            self.peak_mb = max(peak_kib - self._before, 0) / 2**10
        return False


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
