"""The benchmark scripts still run (``--quick --no-write``), so they do not rot between benchmark runs.

Their figures are not checked here (they are for ``benchmarks/RESULTS.md``); what is checked is that each script
finishes, prints its table and leaves ``RESULTS.md`` untouched. The fastest (bounding box, diffusion, conditional
diffusion: about 60 s together) run by default; the others take 30-40 s each even in quick mode on two cores and
run with ``--runslow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _run_quick(script: str, timeout: int) -> str:
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--no-write"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    after = RESULTS.read_bytes() if RESULTS.exists() else None
    assert after == before, f"{script} --no-write changed {RESULTS}"
    return result.stdout


def test_attribution_bbox_benchmark_runs():
    out = _run_quick("attribution_bbox.py", timeout=300)
    for method in ("per-sample IBA", "readout IBA", "Saliency (Captum)", "random"):
        assert f"| {method}" in out


@pytest.mark.slow
def test_attribution_speed_benchmark_runs():
    out = _run_quick("attribution_speed.py", timeout=600)
    assert "| bundled CNN" in out and "| VGG-16-sized" in out and "| ResNet-50-sized" in out


def test_diffusion_benchmark_runs():
    out = _run_quick("diffusion.py", timeout=600)
    assert "| moons | 10 | polynomial |" in out and "diffusers" in out


def test_diffusion_conditional_benchmark_runs():
    out = _run_quick("diffusion_conditional.py", timeout=600)
    assert "| 2-D mixture | 0 |" in out and "denoiser 128" in out and "null label" in out


@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluation_table.py", "flows.py"])
def test_benchmark_runs(script):
    out = _run_quick(script, timeout=1800)
    assert "|---" in out


@pytest.mark.slow
def test_attribution_sequences_benchmark_runs():
    out = _run_quick("attribution_sequences.py", timeout=600)
    for method in ("| saliency", "| integrated-gradients", "| per-sample", "| input-bottleneck", "| readout"):
        assert method in out


@pytest.mark.slow
def test_conditional_flows_benchmark_runs():
    out = _run_quick("conditional_flows.py", timeout=1800)
    for model in ("ConditionalCompactFlow (defaults)", "(a) Beta regression", "(d) zuko conditional NSF"):
        assert f"| {model}" in out


@pytest.mark.slow
def test_scale_out_benchmark_runs():
    # Spawns a 1-process and a 2-process run (40-80 s on the shared 2-core machine); the equality of their results
    # is what tests/test_distributed.py checks by default.
    out = _run_quick("scale_out.py", timeout=900)
    assert "| per-sample attribution" in out and "| readout training" in out and "largest difference" in out
