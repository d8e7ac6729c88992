"""bench/gpu_check.py --dry-run: every part runs on the CPU at toy size, what needs CUDA is skipped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_reports_every_part(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    parts = results["parts"]
    assert {name: p["status"] for name, p in parts.items()} == dict.fromkeys(("corpus", "throughput", "kmeans", "run"),
                                                                             "ok")
    modes = parts["throughput"]["modes"]
    assert modes["fp32"]["status"] == "ok" and modes["fp32"]["ratio"] > 0
    assert modes["fp32"]["profile"]["ours"]["ops"]
    assert modes["bf16"]["status"] == modes["bf16+compile"]["status"] == "skipped"
    assert parts["kmeans"]["implementations"]["speechssl (cuda)"].startswith("skipped")
    assert parts["kmeans"]["results"]["speechssl (cpu)"]["inertia_ratio"] > 0
    assert parts["kmeans"]["results"]["speechssl Lloyd (cpu)"]["inertia_ratio"] > 0
    ctc = parts["run"]["ctc"]
    assert 0 <= ctc["finetune"]["test_per"] and 0 <= ctc["scratch"]["test_per"]
    assert all(t["met"] is None for t in results["target_check"].values())
    assert results["environment"]["torch"] == torch.__version__ and results["wall_s"] > 0
    pngs = ["finetune.png", "kmeans.png", "pretrain.png", "throughput.png"]
    assert results["plots"] == dict.fromkeys(pngs, "ok")
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.json", *pngs])
