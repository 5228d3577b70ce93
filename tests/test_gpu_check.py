"""``make gpu-check`` (tools/gpu_check.py): skipped without CUDA; its checks run on the CPU too."""

import os
import subprocess
import sys

from conftest import REPO

GPU_CHECK = os.path.join(REPO, "tools", "gpu_check.py")


def run_gpu_check(*arguments, environment=None):
    return subprocess.run([sys.executable, GPU_CHECK, *arguments], capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(environment or {})})


def test_skipped_without_cuda():
    result = run_gpu_check(environment={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "gpu-check: skipped (no CUDA device)"


def test_every_check_runs_and_passes_on_the_cpu():
    """The same checks with --device cpu on tiny shapes: one line each, exit 0."""
    result = run_gpu_check("--device", "cpu", "--shape", "tiny", "--variants", "baseline")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")]
    assert [line.split(":")[0] for line in lines] == ["ok   baseline"] * 3
    assert "same greedy log-probs on cpu and cpu" in lines[1]
    assert "checkpoint written on cpu reloads on cpu" in lines[2]
    assert result.stdout.splitlines()[-1].startswith("gpu-check all checks passed")
