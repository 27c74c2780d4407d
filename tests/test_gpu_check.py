"""The GPU check's CPU-only smoke run: its CPU parts work and its GPU parts say they were
skipped, with a reason, never that they passed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
GPU_PARTS = ("gpu_tests", "eval_2proc_nccl", "faiss_gpu")


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch was built without torch.distributed / gloo")
def test_smoke_run_reports_cpu_parts_ok_and_gpu_parts_skipped(tmp_path):
    pytest.importorskip("pandas", reason="open_clip_train needs pandas (the `test` extra)")
    out = tmp_path / "smoke.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # a CPU run even on a GPU machine
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert report["smoke"] is True
    failed = {k: p.get("error") for k, p in parts.items() if p["status"] == "failed"}
    assert not failed, failed
    assert report["all_ran_ok"] is True

    for name in GPU_PARTS:
        assert parts[name]["status"] == "skipped", parts[name]
        assert parts[name]["skipped"] == "no CUDA device"

    ev = parts["eval_2proc_gloo"]
    assert ev["status"] == "ok" and ev["equal"] is True and ev["results"] > 0
    assert ev["metrics_one_process"]

    pipe = parts["pipeline"]
    assert pipe["status"] == "ok" and pipe["device"] == "cpu"
    assert pipe["raw_images_per_s"] > 0 and 0 < pipe["pipeline_over_raw"] < 10

    train = parts["train"]
    assert train["status"] == "ok"
    assert train["open_clip_train"]["checkpoints"], train["open_clip_train"]
    assert set(train["last_loss"]) == {"trainer", "plain", "open_clip_train"}
    assert all(math.isfinite(v) for v in train["last_loss"].values()), train["last_loss"]
    assert train["trainer_epoch_samples_per_s"] > 0 and train["plain_epoch_samples_per_s"] > 0
    assert train["open_clip_train"]["samples_per_s"] > 0

    faiss_cpu = parts["faiss_cpu"]
    assert faiss_cpu["status"] == "ok" and faiss_cpu["top10_agreement_with_torch"] > 0.99
    # The summary table names every part.
    for name in parts:
        assert name in proc.stdout
