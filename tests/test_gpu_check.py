"""benchmarks/gpu_check.py runs where the GPU machine runs it: Keras' JAX backend, no TensorFlow.

Here on the CPU with ``--tiny`` shapes, in a fresh process where ``import tensorflow`` fails
(as on the lent GPU machine): every loss value must match the NumPy reference, the table and
the JSON must be complete. Timing targets are not judged on tiny shapes (they are printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]

#: Block TensorFlow, then run the script as __main__ (what `python benchmarks/gpu_check.py` does).
RUNNER = """
import runpy, sys
sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError, as on the GPU machine
sys.argv = ["gpu_check.py", "--tiny", "--warmup", "0", "--reps", "1"]
runpy.run_path(sys.argv_path, run_name="__main__")
"""


def test_gpu_check_runs_tiny_on_cpu_without_tensorflow(tmp_path):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "OUT": str(tmp_path),
        # compile faster (the same arithmetic): compile time is all this test spends
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }
    script = RUNNER.replace("sys.argv_path", repr(str(ROOT / "benchmarks" / "gpu_check.py")))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for case in ("loss labelfix", "loss keras plain", "loss keras ignore_class"):
        assert case in out
    assert "step labelfix" in out and "step plain" in out
    assert "values: all match the NumPy reference" in out
    assert out.count("PASS") + out.count("FAIL") == 6  # 3 targets x 2 dtypes
    document = json.loads((tmp_path / "gpu_check.json").read_text())
    assert document["tiny"] is True and document["values_ok"] is True
    assert document["devices"] and "cpu" in document["devices"][0].lower()
    timings = {(t["case"], t["dtype"]): t for t in document["timings"]}
    assert len(timings) == 10  # 5 cases x float32, bfloat16
    assert all(t["median_ms"] > 0 and t["value_ok"] for t in timings.values())
    # The ignore-aware losses agree with each other on the void labels, and differ from the
    # plain loss on the void-free ones (the void pixels are really left out).
    for dtype in ("float32", "bfloat16"):
        ours = timings[("loss labelfix", dtype)]["value"]
        keras_ignore = timings[("loss keras ignore_class", dtype)]["value"]
        assert ours == pytest.approx(keras_ignore, rel=1e-3)
        assert ours != pytest.approx(timings[("loss keras plain", dtype)]["value"], rel=1e-4)
