"""benchmarks/bench_peer.py --quick: itra-bench and clip-benchmark, run on the same generated
CIFAR-10 and COCO-format files with the same weights, agree sample by sample. Timings are
measured by the benchmark, never asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench_peer():
    spec = importlib.util.spec_from_file_location("bench_peer",
                                                  REPO / "benchmarks" / "bench_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tie_across_the_cut_off_is_told_apart_from_a_real_disagreement():
    bp = _bench_peer()
    scores = np.array([[0.9, 0.5, 0.5, 0.1],    # positive (col 2) tied with col 1
                       [0.9, 0.5, 0.5, 0.1],    # positive ranks first
                       [0.2, 0.8, 0.1, 0.0]])   # positive second, no tie
    positives = np.zeros(scores.shape, dtype=bool)
    positives[0, 2] = positives[1, 0] = positives[2, 0] = True
    assert bp.query_outcomes(scores, positives, 2, 0.0).tolist() == [-1, 1, 1]
    assert bp.query_outcomes(scores, positives, 1, 0.0).tolist() == [0, 1, 0]
    # 1e-7 apart: not an exact tie, but a near one
    close = scores.copy()
    close[0, 1] += 1e-7
    assert bp.query_outcomes(close, positives, 2, 0.0).tolist() == [0, 1, 1]
    assert bp.query_outcomes(close, positives, 2, bp.NEAR_TIE).tolist() == [-1, 1, 1]

    hits_a, hits_b = np.array([False, True, True]), np.array([True, True, False])
    result = bp.classify_disagreements(hits_a, hits_b, scores, close, positives, 2)
    assert (result["differ"], result["differ_exact_tie"], result["differ_near_tie"],
            result["differ_other"], result["other_examples"]) == (2, 1, 0, 1, [2])
    result = bp.classify_disagreements(hits_a, hits_b, close, close, positives, 2)
    assert (result["differ_exact_tie"], result["differ_near_tie"]) == (0, 1)
    assert result["tie_decided"] == {"a_exact": 0, "a_near": 1, "b_exact": 0, "b_near": 1}


@pytest.mark.slow
def test_quick_run_agrees_with_clip_benchmark(tmp_path):
    pytest.importorskip("clip_benchmark", reason="clip-benchmark (the peer) is not installed")
    pytest.importorskip("open_clip", reason="open_clip is not installed")
    out = tmp_path / "peer.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # a CPU run even on a GPU machine
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_peer.py"), "--quick",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["arch"] == "itra-demo" and report["repeats"] == 1
    assert report["data"]["coco"]["repeated_captions"] > 0  # ties among captions do occur

    zs = report["agreement"]["zeroshot"]
    assert zs["images"] == 64
    assert zs["prediction_differs_other"] == 0, zs
    correct = zs["correct@1"]
    assert correct["differ_other"] == 0, correct
    # accuracies equal, up to the images whose top-1 a tie decides
    ties = correct["differ_exact_tie"] + correct["differ_near_tie"]
    assert abs(zs["clip_acc1"] - zs["itra_acc1"]) * zs["images"] <= ties + 1e-9, zs
    assert zs["clip_metrics"]["acc1"] == pytest.approx(zs["clip_acc1"]) or "note" in zs
    assert zs["itra_metrics"]["acc1"] == pytest.approx(zs["itra_acc1"]) or "note" in zs

    ret = report["agreement"]["retrieval"]
    assert ret["images"] == 64 and ret["captions"] == 320
    for k in (1, 5, 10):
        for direction in ("image_retrieval", "text_retrieval"):
            key = f"{direction}_recall@{k}"
            entry = ret[key]
            assert entry["differ_other"] == 0, (key, entry)
            ties = entry["differ_exact_tie"] + entry["differ_near_tie"]
            assert abs(entry["clip_recall"] - entry["itra_recall"]) * entry["queries"] \
                <= ties + 1e-9, (key, entry)
            # the per-query hits are the ones each tool's own recall counted
            assert ret["clip_metrics"][key] == pytest.approx(entry["clip_recall"]), key
            assert ret["itra_metrics"][key] == pytest.approx(entry["itra_recall"]), key
