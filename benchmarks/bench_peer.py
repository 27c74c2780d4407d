"""itra-bench next to clip-benchmark 1.6.2: the same data, the same weights, paired timings and
per-sample agreement.

Both tools evaluate one open_clip model (random initialisation, seeded, saved to a local
``.pt``; ViT-B-32 by default, ``--arch`` for another, e.g. the packaged tiny ``itra-demo``) on
two generated sets, each in the on-disk format both tools read:

- **CIFAR-10 zero-shot**: torchvision's ``cifar-10-batches-py/`` (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``; pickled dicts of ``data`` uint8 [N, 3072] and ``labels``)
  with ``--cifar-images`` synthetic 32x32 test images (the five training batches hold a few
  images each: only their presence is checked). clip-benchmark: ``--dataset cifar10 --task
  zeroshot_classification``; itra-bench: ``--tasks zeroshot-cifar10``. Both use the CLIP
  class names and the same 18 templates.
- **COCO-format retrieval**: ``coco/val2014/*.jpg`` (640x480 JPEGs) and
  ``coco/annotations/captions_peer.json`` in the COCO captions format, ``--coco-images``
  images x 5 short captions, some repeated exactly (within an image and across images, as
  in COCO). clip-benchmark: ``--dataset mscoco_captions --task zeroshot_retrieval
  --annotation_file ...``; itra-bench: a task file ``coco-peer.yaml`` (protocol
  ``coco_captions``) passed to ``--tasks``.

Every run is a subprocess: batch 64, fp32 (clip-benchmark ``--no_amp``), CPU
(``CUDA_VISIBLE_DEVICES=""``; itra-bench ``--device cpu``), the same number of DataLoader
workers (``--workers``), torch's default thread count in both. Timed: the wall clock and the
CPU time (user + system) of the subprocess and everything it reaped (DataLoader workers),
from ``resource.getrusage(RUSAGE_CHILDREN)`` deltas.

- **cold**: itra-bench with a fresh ``--output`` and a ``--cache-dir`` that holds nothing of
  this task (one per repeat, shared by the two tasks, whose data differ); clip-benchmark as
  is.
- **warm**: itra-bench again with the same cache dir and a fresh output (so the features
  come from its cache); clip-benchmark has no feature cache, so its warm run is simply a
  second run.

Per repeat and task the order is ``itra cold, clip cold, clip warm, itra warm``, and the next
repeat swaps the tools (A B B A, then B A A B), so drift in machine load hits both. Ratios are
itra-bench / clip-benchmark per pair (the two runs next to each other in time); the report
gives their median and min-max over ``--repeats``, and the 1-minute load average before and
after.

**clip-benchmark wrapper.** clip-benchmark 1.6.2 does not run unmodified here, so its runs go
through a thin wrapper kept in this file (``python bench_peer.py _clip-benchmark [--dump F]
[--model-configs DIR] -- eval ...``), which patches three spots in memory and then calls its
own CLI (``clip_benchmark.cli.main``) with the arguments after ``--``:

1. ``clip_benchmark.datasets.builder`` imports modules that ``import requests``, which it
   does not declare: when ``requests`` is not installed an empty stand-in module is put in
   ``sys.modules`` (its ``get`` raises; nothing here downloads).
2. It always builds CIFAR-10 with ``download=True``, and torchvision then checks the md5 of
   every file against the real dataset's: ``torchvision.datasets.cifar.check_integrity`` is
   replaced by a check that the file exists, so the generated files are read as they are.
3. ``zeroshot_classification.accuracy`` calls ``float()`` on a one-element 1-d array, which
   NumPy 2.4 refuses: that function is replaced by one computing the same top-k fractions
   with ``.item()``.

With ``--dump`` the wrapper also records, through clip-benchmark's own code, what its metrics
were computed from: the zero-shot logits and targets (``run_classification``'s result), the
retrieval score matrix and each per-query recall vector (``batchify``'s inputs and results).
Only the first cold run of each task dumps (a few milliseconds).

**Agreement.** itra-bench writes no per-sample output, so after the timed runs one untimed
itra-bench run of both tasks (the first repeat's warm cache, ``_itra-capture`` mode) records
the inputs of its metric functions (``zeroshot_classification`` and ``retrieval_metrics`` of
``itra_bench.protocols``) and derives per-sample scores with its own ``zeroshot_scores`` and
``retrieval_ranks``; its metrics must equal the timed run's JSON. Reported: the fraction of
equal top-1 predictions and both top-1 accuracies; recall@1/5/10 both ways for both tools, and
per query whether each counts a hit. A query the tools disagree on is classed as an **exact
tie** (in either tool's scores the positive ties with other candidates across the cut-off, so
the outcome is the tie-break's), a **near tie** (the same within 1e-5 in cosine), or **other**
(a real disagreement); the largest difference between the two tools' cosine scores is reported
too, and, per tool, how many queries a tie-break decides at all (agreeing or not).

Usage::

    # tiny arch, 64 images, 1 repeat: ~1.5 min of CPU (9 processes, each importing torch,
    # torchvision and open_clip), ~3 min wall on a busy 2-core machine
    python benchmarks/bench_peer.py --quick --out bench_peer_quick.json
    python benchmarks/bench_peer.py --repeats 3 --workers 1 --out bench_peer.json   # ViT-B-32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
COCO_TASK_NAME = "coco-peer"
COCO_ANNOTATIONS = "coco/annotations/captions_peer.json"
COCO_IMAGES = "coco/val2014"
RECALL_KS = (1, 5, 10)
#: Cosine distance under which two scores count as a near tie.
NEAR_TIE = 1e-5
CLIP_WRAPPER = "_clip-benchmark"
ITRA_CAPTURE = "_itra-capture"
TASKS = ("zeroshot", "retrieval")

# ----------------------------------------------------------------------------------- data --


def write_cifar10(root: Path, test_images: int, train_per_batch: int = 10, seed: int = 0) -> Path:
    """torchvision's CIFAR-10 python files under ``root/cifar-10-batches-py``; returns root.

    Images are a coarse colour field (tinted by class) upsampled to 32x32 plus noise; labels
    cycle through the classes in a shuffled order.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def images(count: int) -> tuple[np.ndarray, list[int]]:
        labels = [i % 10 for i in range(count)]
        rng.shuffle(labels)
        rows = []
        for y in labels:
            coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float64)
            coarse = (0.6 * coarse + 0.4 * np.array([25 * y, 255 - 25 * y, 128])).astype(np.uint8)
            img = np.asarray(Image.fromarray(coarse).resize((32, 32), Image.Resampling.BILINEAR),
                             dtype=np.int16) + rng.integers(-10, 11, (32, 32, 3))
            rows.append(img.clip(0, 255).astype(np.uint8).transpose(2, 0, 1).reshape(3072))
        return np.stack(rows), labels

    def dump(name: str, obj: dict[str, Any]) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    dump("batches.meta", {"num_cases_per_batch": 10000, "label_names": CIFAR10_NAMES,
                          "num_vis": 3072})
    for name, count in [*((f"data_batch_{i}", train_per_batch) for i in range(1, 6)),
                        ("test_batch", test_images)]:
        data, labels = images(count)
        dump(name, {"batch_label": f"{name} (synthetic)", "labels": labels, "data": data,
                    "filenames": [f"synthetic_{name}_{i:05d}.png" for i in range(count)]})
    return root


_SUBJECTS = ("a man", "a woman", "two people", "a young boy", "a little girl", "a dog",
             "a black cat", "a group of people", "a person", "a brown horse", "an elephant",
             "a giraffe", "a large bus", "a red truck", "a train", "a plate of food",
             "a pizza", "a skateboarder", "a surfer", "a baseball player", "a bowl of fruit",
             "a motorcycle", "a small bird", "a white sink")
_VERBS = ("is standing", "is sitting", "is walking", "riding a bike", "holding an umbrella",
          "eating a sandwich", "playing with a frisbee", "looking at a phone", "is parked",
          "is laying down", "waiting", "flying a kite", "sits", "stands")
_PLACES = ("on a city street", "in a grassy field", "next to a building", "on the beach",
           "in a kitchen", "at a train station", "near the water", "on a wooden table",
           "in front of a house", "under a blue sky", "on top of a hill", "in a living room",
           "by the side of the road", "in the snow")
_EXTRAS = ("", "", "", " with people around", " during the day", " at night",
           " on a sunny day", " next to a tree")
#: Captions that, as in COCO, several annotators wrote word for word for different images.
_COMMON_CAPTIONS = ("A man riding a wave on top of a surfboard.",
                    "A giraffe standing next to a tree.", "A plate of food on a table.",
                    "A bathroom with a toilet and a sink.", "A train on the tracks.")


def make_caption(rng: np.random.Generator) -> str:
    """A short COCO-like caption (mostly 7-16 tokens), with COCO's casual casing and stops."""
    text = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_PLACES)}"
            f"{rng.choice(_EXTRAS)}")
    if rng.random() < 0.85:
        text = text[0].upper() + text[1:]
    return text + ("." if rng.random() < 0.8 else "")


def write_coco(root: Path, images: int, captions_per_image: int = 5, seed: int = 0,
               size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """JPEGs in ``root/coco/val2014`` and their COCO captions JSON; returns counts.

    Image ids are not in file-list order (both tools sort by id). About 3 % of captions repeat
    a caption of another image (one of a few stock sentences, or a random earlier caption)
    and 1 % repeat one of the same image's.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    image_dir = root / COCO_IMAGES
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / COCO_ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    ids = rng.choice(np.arange(1, 600_000), size=images, replace=False).tolist()
    width, height = size
    doc: dict[str, Any] = {"info": {"description": "synthetic COCO-format captions"},
                           "images": [], "annotations": []}
    written: list[str] = []
    duplicates = 0
    for image_id in ids:
        name = f"COCO_val2014_{image_id:012d}.jpg"
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(image_dir / name, quality=90)
        doc["images"].append({"id": image_id, "file_name": name, "width": width,
                              "height": height})
        own: list[str] = []
        for _ in range(captions_per_image):
            draw = rng.random()
            if draw < 0.015:
                text = str(rng.choice(_COMMON_CAPTIONS))
            elif draw < 0.03 and written:
                text = written[int(rng.integers(len(written)))]
            elif draw < 0.04 and own:
                text = own[int(rng.integers(len(own)))]
            else:
                text = make_caption(rng)
            duplicates += text in written or text in own
            own.append(text)
            doc["annotations"].append({"id": len(doc["annotations"]) + 1,
                                       "image_id": image_id, "caption": text})
        written.extend(own)
    # COCO lists annotations grouped neither by image nor by id order.
    order = rng.permutation(len(doc["annotations"]))
    doc["annotations"] = [doc["annotations"][i] for i in order]
    (root / COCO_ANNOTATIONS).write_text(json.dumps(doc))
    (root / f"{COCO_TASK_NAME}.yaml").write_text(
        f"# COCO-format captions generated by benchmarks/bench_peer.py\n"
        f"name: {COCO_TASK_NAME}\ntask_type: coco_captions\n"
        f"annotations: {COCO_ANNOTATIONS}\nimages: {COCO_IMAGES}\n")
    return {"images": images, "captions": len(doc["annotations"]),
            "distinct_captions": len(set(a["caption"] for a in doc["annotations"])),
            "repeated_captions": duplicates}


def write_weights(path: Path, arch: str, seed: int) -> None:
    """A seeded random-init open_clip ``arch`` state dict saved to ``path``."""
    import open_clip
    import torch

    from itra_bench.plugins.openclip_models import register_packaged_configs

    register_packaged_configs(open_clip)
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        model = open_clip.create_model(arch, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    torch.save(model.state_dict(), path)


# ------------------------------------------------------------------- clip-benchmark wrapper --


def _topk_fractions(output: Any, target: Any, topk: tuple[int, ...] = (1,)) -> list[float]:
    """clip-benchmark's ``accuracy``: the fraction of rows whose target is in the top k."""
    top = output.topk(max(topk), 1, True, True)[1].t()
    hit = top.eq(target.view(1, -1).expand_as(top))
    return [hit[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def clip_benchmark_wrapper(argv: list[str]) -> int:
    """Run clip-benchmark's CLI with the patches the module docstring lists.

    ``argv``: ``[--dump FILE] [--model-configs DIR] -- <clip_benchmark arguments>``.
    """
    if "--" not in argv:
        raise SystemExit(f"{CLIP_WRAPPER}: put clip_benchmark's arguments after '--'")
    split = argv.index("--")
    own = argparse.ArgumentParser(prog=CLIP_WRAPPER)
    own.add_argument("--dump", type=Path)
    own.add_argument("--model-configs", type=Path)
    opts = own.parse_args(argv[:split])

    # 1. undeclared dependency, imported at import time by some dataset modules
    try:
        import requests  # noqa: F401
    except ImportError:
        stub = types.ModuleType("requests")

        def _no_network(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("requests is stubbed by bench_peer.py: nothing is downloaded")

        stub.get = _no_network  # type: ignore[attr-defined]
        sys.modules["requests"] = stub
    # 2. download=True for CIFAR-10 means an md5 check against the real files
    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
    # 3. float() of a one-element array (NumPy >= 2.4 refuses it)
    from clip_benchmark.metrics import zeroshot_classification as zc
    from clip_benchmark.metrics import zeroshot_retrieval as zr

    zc.accuracy = _topk_fractions
    if opts.model_configs:
        import open_clip

        if not any(p.stem in open_clip.list_models() for p in opts.model_configs.glob("*.json")):
            open_clip.add_model_config(opts.model_configs)

    dump: dict[str, Any] = {}
    if opts.dump:
        run_classification, batchify = zc.run_classification, zr.batchify

        def recording_classification(*args: Any, **kwargs: Any) -> Any:
            logits, target = run_classification(*args, **kwargs)
            dump["zeroshot"] = {"logits": logits, "target": target}
            return logits, target

        def recording_batchify(func: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
            out = batchify(func, x, y, *args, **kwargs)
            calls = dump.setdefault("retrieval", {"calls": []})["calls"]
            if not calls:  # the first call's inputs: text x image scores and positives
                dump["retrieval"]["scores"] = x.clone()
                dump["retrieval"]["positive_pairs"] = y.clone()
            calls.append({"k": kwargs.get("k"), "rows": int(x.shape[0]), "recall": out})
            return out

        zc.run_classification = recording_classification
        zr.batchify = recording_batchify

    from clip_benchmark.cli import main as clip_main

    sys.argv = ["clip_benchmark", *argv[split + 1:]]
    clip_main()
    if opts.dump:
        import torch

        torch.save(dump, opts.dump)
    return 0


# ---------------------------------------------------------------------- itra-bench capture --


def itra_capture(argv: list[str]) -> int:
    """Run ``itra-bench`` (arguments after ``DUMP --``) recording its metric inputs to DUMP."""
    import inspect

    import torch
    import torch.nn.functional as F

    import itra_bench.protocols.retrieval as retrieval
    import itra_bench.protocols.zeroshot as zeroshot
    from itra_bench.protocols.retrieval import retrieval_ranks
    from itra_bench.protocols.zeroshot import zeroshot_scores

    dump_path, rest = Path(argv[0]), argv[argv.index("--") + 1:]
    dump: dict[str, Any] = {}
    zeroshot_classification = zeroshot.zeroshot_classification
    retrieval_metrics = retrieval.retrieval_metrics

    def bound(fn: Any, args: Any, kwargs: Any) -> dict[str, Any]:
        call = inspect.signature(fn).bind(*args, **kwargs)
        call.apply_defaults()
        return dict(call.arguments)

    def recording_zeroshot(*args: Any, **kwargs: Any) -> Any:
        out = zeroshot_classification(*args, **kwargs)
        a = bound(zeroshot_classification, args, kwargs)
        dump["zeroshot"] = {"scores": zeroshot_scores(a["image_features"], a["classifier"],
                                                      a["device"]).cpu(),
                            "labels": a["labels"].cpu(), "metrics": out}
        return out

    def recording_retrieval(*args: Any, **kwargs: Any) -> Any:
        out = retrieval_metrics(*args, **kwargs)
        a = bound(retrieval_metrics, args, kwargs)
        image_ranks, text_ranks = retrieval_ranks(
            a["image_features"], a["text_features"], a["text_to_image"],
            chunk_size=a["chunk_size"], device=a["device"])
        images = F.normalize(a["image_features"].float(), dim=-1)
        texts = F.normalize(a["text_features"].float(), dim=-1)
        # text x image cosine, in the chunks retrieval_ranks scores them in
        scores = torch.cat([texts[s:s + a["chunk_size"]] @ images.T
                            for s in range(0, len(texts), a["chunk_size"])])
        dump["retrieval"] = {"scores": scores.cpu(), "text_to_image": a["text_to_image"].cpu(),
                             "image_ranks": image_ranks, "text_ranks": text_ranks,
                             "metrics": out}
        return out

    # The tasks call these two through their modules (or through names generic_tasks
    # imported from them, bound when it is first imported: after this patch).
    zeroshot.zeroshot_classification = recording_zeroshot
    retrieval.retrieval_metrics = recording_retrieval
    import itra_bench.generic_tasks as gt

    for name, fn in (("zeroshot_classification", recording_zeroshot),
                     ("retrieval_metrics", recording_retrieval)):
        if hasattr(gt, name):
            setattr(gt, name, fn)
    from itra_bench.cli import main as itra_main

    code = itra_main(rest)
    torch.save(dump, dump_path)
    return int(code or 0)


# -------------------------------------------------------------------------------- timing --


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd: list[str], log: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd`` to completion (output to ``log``); its wall and CPU seconds."""
    cpu, start = _children_cpu(), time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return {"wall_s": wall, "cpu_s": cpu}


class Setup:
    """Paths and settings shared by every run."""

    def __init__(self, args: argparse.Namespace, work: Path, data: Path, weights: Path) -> None:
        self.args, self.work, self.data, self.weights = args, work, data, weights
        self.env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
        exe = Path(sys.executable).with_name("itra-bench")
        self.itra_exe = str(exe) if exe.exists() else (shutil.which("itra-bench") or "itra-bench")
        from itra_bench.plugins.openclip_models import PACKAGED_CONFIGS
        self.model_configs = PACKAGED_CONFIGS

    def clip_cmd(self, task: str, output: Path, dump: Path | None = None) -> list[str]:
        """clip-benchmark (through the wrapper) on ``task``, metrics to ``output``."""
        wrapper = [sys.executable, str(Path(__file__).resolve()), CLIP_WRAPPER]
        if dump is not None:
            wrapper += ["--dump", str(dump)]
        if (self.model_configs / f"{self.args.arch}.json").is_file():
            wrapper += ["--model-configs", str(self.model_configs)]
        common = ["--model", self.args.arch, "--pretrained", str(self.weights),
                  "--batch_size", "64", "--no_amp", "--num_workers", str(self.args.workers),
                  "--output", str(output)]
        if task == "zeroshot":
            spec = ["--dataset", "cifar10", "--task", "zeroshot_classification",
                    "--dataset_root", str(self.data)]
        else:
            spec = ["--dataset", "mscoco_captions", "--task", "zeroshot_retrieval",
                    "--dataset_root", str(self.data / "coco"),
                    "--annotation_file", str(self.data / COCO_ANNOTATIONS),
                    "--recall_k", *map(str, RECALL_KS)]
        return [*wrapper, "--", "eval", *spec, *common]

    def itra_args(self, tasks: list[str], cache: Path, output: Path) -> list[str]:
        """``itra-bench run`` arguments for ``tasks`` (of :data:`TASKS`)."""
        names = ["zeroshot-cifar10" if t == "zeroshot" else
                 str(self.data / f"{COCO_TASK_NAME}.yaml") for t in tasks]
        return ["run", "--model", f"openclip:{self.args.arch}@{self.weights}", "--tasks", *names,
                "--data-root", str(self.data), "--batch-size", "64", "--precision", "fp32",
                "--device", "cpu", "--workers", str(self.args.workers), "--cache-dir",
                str(cache), "--output", str(output)]


def read_itra_metrics(output: Path) -> dict[str, float]:
    """The metrics of the one result JSON under an itra-bench ``--output`` folder."""
    found = [p for p in output.rglob("*.json")
             if isinstance(json.loads(p.read_text()), dict)
             and "metrics" in json.loads(p.read_text())]
    if len(found) != 1:
        raise RuntimeError(f"expected one result JSON under {output}, found {found}")
    return json.loads(found[0].read_text())["metrics"]


def read_clip_metrics(output: Path) -> dict[str, float]:
    """The metrics of a clip-benchmark output JSON."""
    return json.loads(output.read_text())["metrics"]


def measure(setup: Setup) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The timed runs, alternated; returns the rows and the first runs' metrics and dumps."""
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for r in range(setup.args.repeats):
        for task in TASKS:
            run_dir = setup.work / f"r{r}-{task}"
            run_dir.mkdir(parents=True)
            # one cache per repeat: each task's first run is cold all the same (its data
            # differ), and the agreement run reads both tasks from it at once
            cache = setup.work / f"r{r}-itra-cache"
            order = (["itra:cold", "clip:cold", "clip:warm", "itra:warm"] if r % 2 == 0 else
                     ["clip:cold", "itra:cold", "itra:warm", "clip:warm"])
            for step in order:
                tool, phase = step.split(":")
                log = run_dir / f"{tool}-{phase}.log"
                if tool == "clip":
                    out = run_dir / f"clip-{phase}.json"
                    dump = run_dir / "clip-dump.pt" if r == 0 and phase == "cold" else None
                    timing = timed_run(setup.clip_cmd(task, out, dump), log, setup.env)
                    metrics = read_clip_metrics(out)
                else:
                    out = run_dir / f"itra-{phase}"
                    timing = timed_run([setup.itra_exe, *setup.itra_args([task], cache, out)], log,
                                       setup.env)
                    metrics = read_itra_metrics(out)
                rows.append({"repeat": r, "task": task, "tool": tool, "phase": phase, **timing,
                             "metrics": metrics})
                print(f"  repeat {r} {task:9} {tool:4} {phase}: {timing['wall_s']:7.2f} s wall, "
                      f"{timing['cpu_s']:7.2f} s CPU", flush=True)
                if r == 0 and phase == "cold":
                    first[f"{tool}:{task}"] = metrics
            if r == 0:
                first[f"clip-dump:{task}"] = run_dir / "clip-dump.pt"
                first["itra-cache"] = cache
    return rows, first


def ratios(rows: list[dict[str, Any]], task: str, phase: str) -> dict[str, Any]:
    """Per-repeat itra / clip ratios of CPU and wall time for ``task`` and ``phase``."""
    pairs = []
    for r in sorted({row["repeat"] for row in rows}):
        pick = {row["tool"]: row for row in rows
                if (row["repeat"], row["task"], row["phase"]) == (r, task, phase)}
        pairs.append({k: pick["itra"][f"{k}_s"] / pick["clip"][f"{k}_s"] for k in ("cpu", "wall")}
                     | {"itra_wall_s": pick["itra"]["wall_s"], "itra_cpu_s": pick["itra"]["cpu_s"],
                        "clip_wall_s": pick["clip"]["wall_s"], "clip_cpu_s": pick["clip"]["cpu_s"]})

    def spread(key: str) -> dict[str, float]:
        values = [p[key] for p in pairs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {"pairs": pairs, "cpu_ratio": spread("cpu"), "wall_ratio": spread("wall"),
            "itra_wall_s": spread("itra_wall_s"), "clip_wall_s": spread("clip_wall_s"),
            "itra_cpu_s": spread("itra_cpu_s"), "clip_cpu_s": spread("clip_cpu_s")}


# ----------------------------------------------------------------------------- agreement --


def query_outcomes(scores: np.ndarray, positives: np.ndarray, k: int, tol: float) -> np.ndarray:
    """Per query (row): 1 a hit at ``k`` whatever the tie-break, 0 a miss whatever it, -1 when
    the tie-break decides (the best positive ties with other candidates across the cut-off).

    ``scores`` ``[Q, C]``, ``positives`` a boolean ``[Q, C]`` mask; scores within ``tol`` of
    the best positive's count as tied with it.
    """
    scores = scores.astype(np.float64)
    best = np.where(positives, scores, -np.inf).max(axis=1, keepdims=True)
    ahead = (scores > best + tol).sum(axis=1)
    tied_others = ((np.abs(scores - best) <= tol) & ~positives).sum(axis=1)
    out = np.full(len(scores), -1, dtype=np.int64)
    out[ahead + tied_others < k] = 1
    out[ahead >= k] = 0
    return out


def classify_disagreements(hit_a: np.ndarray, hit_b: np.ndarray, scores_a: np.ndarray,
                           scores_b: np.ndarray, positives: np.ndarray, k: int
                           ) -> dict[str, Any]:
    """Queries where the two tools' hits differ, split into exact ties, near ties and others.

    Tool ``a`` is clip-benchmark, ``b`` itra-bench; ``tie_decided`` counts, per tool, the
    queries whose outcome its tie-break decides (exactly equal scores, or within
    :data:`NEAR_TIE`), whether or not the tools differ on them.
    """
    differ = np.flatnonzero(hit_a != hit_b)
    exact = ((query_outcomes(scores_a[differ], positives[differ], k, 0.0) == -1)
             | (query_outcomes(scores_b[differ], positives[differ], k, 0.0) == -1))
    near = ~exact & ((query_outcomes(scores_a[differ], positives[differ], k, NEAR_TIE) == -1)
                     | (query_outcomes(scores_b[differ], positives[differ], k, NEAR_TIE) == -1))
    other = differ[~exact & ~near]
    # queries whose outcome a tie-break decides in each tool, agreeing or not
    tie_decided = {f"{name}_{kind}": int((query_outcomes(s, positives, k, tol) == -1).sum())
                   for name, s in (("a", scores_a), ("b", scores_b))
                   for kind, tol in (("exact", 0.0), ("near", NEAR_TIE))}
    return {"queries": len(hit_a), "both_hit": int((hit_a & hit_b).sum()),
            "agree": int((hit_a == hit_b).sum()), "differ": len(differ),
            "differ_exact_tie": int(exact.sum()), "differ_near_tie": int(near.sum()),
            "differ_other": len(other), "other_examples": other[:10].tolist(),
            "tie_decided": tie_decided}


def zeroshot_agreement(clip_dump: dict[str, Any], itra_dump: dict[str, Any]) -> dict[str, Any]:
    """Top-1 predictions of both tools, query by query."""
    logits = clip_dump["logits"].double().numpy()
    clip_scores = logits / 100.0  # clip-benchmark scales the cosine by 100
    itra_scores = itra_dump["scores"].double().numpy()
    target = clip_dump["target"].numpy()
    if not np.array_equal(target, itra_dump["labels"].numpy()):
        raise RuntimeError("the tools read different CIFAR-10 labels or orders")
    clip_pred, itra_pred = logits.argmax(axis=1), itra_scores.argmax(axis=1)
    positives = np.eye(logits.shape[1], dtype=bool)[target]
    out = {"images": len(target), "predictions_equal": float((clip_pred == itra_pred).mean()),
           "clip_acc1": float((clip_pred == target).mean()),
           "itra_acc1": float((itra_pred == target).mean()),
           "max_abs_cosine_diff": float(np.abs(clip_scores - itra_scores).max())}
    # clip-benchmark's logits are float32 cosines times 100: dividing by 100 in float64 keeps
    # equal scores equal and distinct ones distinct, so ties are judged on one scale.
    pred_differ = np.flatnonzero(clip_pred != itra_pred)
    gaps = [np.diff(np.sort(s[pred_differ], axis=1)[:, -2:], axis=1)[:, 0]
            for s in (clip_scores, itra_scores)]
    exact = (gaps[0] == 0) | (gaps[1] == 0)
    near = ~exact & ((gaps[0] <= NEAR_TIE) | (gaps[1] <= NEAR_TIE))
    out.update({"prediction_differs": len(pred_differ),
                "prediction_differs_exact_tie": int(exact.sum()),
                "prediction_differs_near_tie": int(near.sum()),
                "prediction_differs_other": int((~exact & ~near).sum())})
    out["correct@1"] = classify_disagreements(clip_pred == target, itra_pred == target,
                                              clip_scores, itra_scores, positives, 1)
    return out


def retrieval_agreement(clip_dump: dict[str, Any], itra_dump: dict[str, Any]) -> dict[str, Any]:
    """Per-query hits at k of both tools, both directions."""
    clip_scores = clip_dump["scores"].double().numpy()          # texts x images
    positives = clip_dump["positive_pairs"].numpy().astype(bool)
    itra_scores = itra_dump["scores"].double().numpy()
    text_to_image = itra_dump["text_to_image"].numpy()
    itra_pos = np.zeros_like(positives)
    itra_pos[np.arange(len(text_to_image)), text_to_image] = True
    if not np.array_equal(positives, itra_pos):
        raise RuntimeError("the tools pair captions and images differently")
    calls = clip_dump["calls"]
    out: dict[str, Any] = {"captions": int(positives.shape[0]), "images": int(positives.shape[1]),
                           "max_abs_cosine_diff": float(np.abs(clip_scores - itra_scores).max())}
    for i, k in enumerate(RECALL_KS):
        image_call, text_call = calls[2 * i], calls[2 * i + 1]
        assert image_call["k"] == k and text_call["k"] == k, (image_call["k"], text_call["k"])
        for direction, call, ranks, s_clip, s_itra, pos in (
                ("image_retrieval", image_call, itra_dump["image_ranks"], clip_scores,
                 itra_scores, positives),
                ("text_retrieval", text_call, itra_dump["text_ranks"], clip_scores.T,
                 itra_scores.T, positives.T)):
            clip_hit = call["recall"].numpy() > 0
            itra_hit = ranks.numpy() < k
            entry = classify_disagreements(clip_hit, itra_hit, s_clip, s_itra, pos, k)
            entry.update({"clip_recall": float(clip_hit.mean()),
                          "itra_recall": float(itra_hit.mean())})
            out[f"{direction}_recall@{k}"] = entry
    return out


def agreement(setup: Setup, first: dict[str, Any]) -> dict[str, Any]:
    """Both tools' per-sample outcomes (itra-bench's from one untimed capture run)."""
    import torch

    dump, output = setup.work / "itra-dump.pt", setup.work / "capture"
    cmd = [sys.executable, str(Path(__file__).resolve()), ITRA_CAPTURE, str(dump), "--",
           *setup.itra_args(list(TASKS), first["itra-cache"], output)]
    timed_run(cmd, setup.work / "capture.log", setup.env)
    itra_dumps = torch.load(dump, weights_only=False)
    out: dict[str, Any] = {}
    for task in TASKS:
        if task not in itra_dumps:
            raise RuntimeError(f"the itra-bench capture run recorded no {task} metric call; "
                               f"see {setup.work / 'capture.log'}")
        itra_dump = itra_dumps[task]
        clip_dump = torch.load(first[f"clip-dump:{task}"], weights_only=False)[task]
        itra_json, clip_json = first[f"itra:{task}"], first[f"clip:{task}"]
        captured = {k: v for k, v in itra_dump["metrics"].items() if k in itra_json}
        if any(abs(v - itra_json[k]) > 1e-12 for k, v in captured.items()):
            raise RuntimeError(f"the capture run's {task} metrics {captured} differ from the "
                               f"timed run's {itra_json}")
        if task == "zeroshot":
            result = zeroshot_agreement(clip_dump, itra_dump)
            if abs(result["clip_acc1"] - clip_json["acc1"]) > 1e-12 \
                    or abs(result["itra_acc1"] - itra_json["acc1"]) > 1e-12:
                result["note"] = ("top-1 from argmax differs from a tool's acc1 (its topk "
                                  "broke a tie otherwise)")
        else:
            result = retrieval_agreement(clip_dump, itra_dump)
        result["clip_metrics"], result["itra_metrics"] = clip_json, itra_json
        out[task] = result
    return out


# ---------------------------------------------------------------------------------- main --


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    import open_clip
    import PIL
    import torch
    from machine_info import cpu_name

    import itra_bench

    cpu = cpu_name()
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "open_clip": open_clip.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__,
            "clip_benchmark": version("clip_benchmark"), "itra_bench": itra_bench.__version__,
            "platform": platform.platform()}


def _fmt(spread: dict[str, float]) -> str:
    return f"{spread['median']:.3f} ({spread['min']:.3f}-{spread['max']:.3f})"


def summarise(report: dict[str, Any]) -> None:
    """Print the ratios, targets and agreement."""
    print(f"\n{report['arch']}, CIFAR-10 {report['data']['cifar_test_images']} test images, "
          f"COCO-format {report['data']['coco']['images']} images x "
          f"{report['data']['coco']['captions'] // report['data']['coco']['images']} captions, "
          f"batch 64 fp32 CPU, {report['workers']} workers, {report['repeats']} repeats")
    print(f"load average (1 min) before {report['load_average_before'][0]:.2f}, "
          f"after {report['load_average_after'][0]:.2f}")
    print(f"{'itra / clip-benchmark':<22} {'CPU ratio med (min-max)':>26} "
          f"{'wall ratio med (min-max)':>26} {'itra wall s':>11} {'clip wall s':>11}")
    for key, entry in report["ratios"].items():
        print(f"{key:<22} {_fmt(entry['cpu_ratio']):>26} {_fmt(entry['wall_ratio']):>26} "
              f"{entry['itra_wall_s']['median']:>11.2f} {entry['clip_wall_s']['median']:>11.2f}")
    print("targets:")
    for name, target in report["targets"].items():
        print(f"  {'met    ' if target['met'] else 'NOT met'} {name}: {target['value']:.3f} "
              f"(target {target['limit']})")
    zs = report["agreement"]["zeroshot"]
    print(f"zero-shot: predictions equal {zs['predictions_equal']:.4f} of {zs['images']}; "
          f"acc1 clip-benchmark {zs['clip_acc1']:.4f}, itra-bench {zs['itra_acc1']:.4f}; "
          f"differing predictions: {zs['prediction_differs_exact_tie']} exact ties, "
          f"{zs['prediction_differs_near_tie']} near ties, {zs['prediction_differs_other']} "
          f"other; max |cosine diff| {zs['max_abs_cosine_diff']:.2e}")
    ret = report["agreement"]["retrieval"]
    print(f"retrieval ({ret['captions']} captions, {ret['images']} images; "
          f"max |cosine diff| {ret['max_abs_cosine_diff']:.2e}):")
    print(f"  {'metric':<28} {'clip':>7} {'itra':>7} {'both hit':>8} {'differ':>6} "
          f"{'exact tie':>9} {'near tie':>8} {'other':>5}  tie-decided exact/near clip, itra")
    for key, e in ret.items():
        if isinstance(e, dict) and "clip_recall" in e:
            t = e["tie_decided"]
            print(f"  {key:<28} {e['clip_recall']:>7.4f} {e['itra_recall']:>7.4f} "
                  f"{e['both_hit']:>8} {e['differ']:>6} {e['differ_exact_tie']:>9} "
                  f"{e['differ_near_tie']:>8} {e['differ_other']:>5}  "
                  f"{t['a_exact']}/{t['a_near']}, {t['b_exact']}/{t['b_near']}")


def targets(report_ratios: dict[str, Any]) -> dict[str, Any]:
    """The targets of issue 13 against the median ratios."""
    out: dict[str, Any] = {
        "cold retrieval CPU ratio <= 0.6": (report_ratios["cold_retrieval"]["cpu_ratio"]["median"],
                                            0.6),
        "cold zero-shot CPU ratio <= 0.9": (report_ratios["cold_zeroshot"]["cpu_ratio"]["median"],
                                            0.9),
    }
    for task in TASKS:
        warm = report_ratios[f"warm_{task}"]
        out[f"warm {task} rerun wall <= 3 s"] = (warm["itra_wall_s"]["median"], 3.0)
        out[f"warm {task} rerun CPU ratio <= 0.05"] = (warm["cpu_ratio"]["median"], 0.05)
    return {k: {"value": v, "limit": lim, "met": v <= lim} for k, (v, lim) in out.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Generate the data and weights, run the timed pairs and the agreement check, print the
    summary and write the JSON report; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-32",
                        help="open_clip architecture (a built-in name or a packaged config such "
                             "as itra-demo)")
    parser.add_argument("--cifar-images", type=int, default=1000, help="CIFAR-10 test images")
    parser.add_argument("--coco-images", type=int, default=500,
                        help="COCO-format images (5 captions each)")
    parser.add_argument("--repeats", type=int, default=3, help="A B B A rounds per task")
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)),
                        help="DataLoader workers, the same for both tools")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the data")
    parser.add_argument("--quick", action="store_true",
                        help="itra-demo arch, 64 images each, 1 repeat (a smoke run, ~1 min)")
    parser.add_argument("--work", type=Path,
                        help="keep data, weights and run folders here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("bench_peer.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.cifar_images, args.coco_images, args.repeats = "itra-demo", 64, 64, 1

    import tempfile

    with tempfile.TemporaryDirectory(prefix="itra-bench-peer-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--work {work} is not empty")
        data, runs = work / "data", work / "runs"
        runs.mkdir(parents=True)
        started = time.perf_counter()
        write_cifar10(data, args.cifar_images, seed=args.seed)
        coco = write_coco(data, args.coco_images, seed=args.seed)
        weights = work / f"{args.arch}-seed{args.seed}.pt"
        write_weights(weights, args.arch, args.seed)
        print(f"data and weights in {work} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr)
        setup = Setup(args, runs, data, weights)

        load_before = os.getloadavg()
        rows, first = measure(setup)
        load_after = os.getloadavg()
        agree = agreement(setup, first)

    report_ratios = {f"{phase}_{task}": ratios(rows, task, phase)
                     for phase in ("cold", "warm") for task in TASKS}
    report = {"benchmark": "itra_bench_vs_clip_benchmark", "command": sys.argv,
              "arch": args.arch,
              "weights": f"open_clip random init, torch.manual_seed({args.seed})",
              "data": {"cifar_test_images": args.cifar_images, "coco": coco},
              "batch_size": 64, "precision": "fp32", "device": "cpu", "workers": args.workers,
              "repeats": args.repeats, "machine": machine(),
              "load_average_before": load_before, "load_average_after": load_after,
              "runs": rows, "ratios": report_ratios, "targets": targets(report_ratios),
              "agreement": agree}
    summarise(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CLIP_WRAPPER:
        sys.exit(clip_benchmark_wrapper(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == ITRA_CAPTURE:
        sys.exit(itra_capture(sys.argv[2:]))
    main()
