"""End-to-end behaviour of `itra-bench run` and `itra-bench results` with a tiny test model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from itra_bench.results import iter_records

PIXEL = ("--plugin", "itra_test_plugin")


def run_args(tmp_path: Path, *extra: str, model: str = "pixel") -> list[str]:
    return ["run", "--model", model, *PIXEL, "--output", tmp_path / "out",
            "--cache-dir", tmp_path / "cache", "--workers", "0", "--no-progress", *extra]


def make_image_folder(root: Path, splits=("train", "test"), classes=("cat", "dog"), n=6):
    for split in splits:
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                colour = (200 * c + 20 * i % 50, 30 * i % 255, 255 - 200 * c)
                Image.new("RGB", (24, 24), colour).save(d / f"{i}.jpg")
    return root


def records(out: Path) -> dict[str, dict]:
    return {r["task"]: r for _, r in iter_records(out)}


def test_demo_suite_runs_and_writes_one_result_per_task(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "demo"))
    assert res.code == 0, res
    recs = records(tmp_path / "out")
    assert set(recs) == {"digits-zeroshot", "digits-linear-probe", "digits-knn",
                         "digits-clustering", "digits-retrieval"}
    knn = recs["digits-knn"]
    # Pixels of digits are very separable: k-NN far above the 10% of chance.
    assert knn["main_score"] == "acc1" and knn["main_score_value"] > 0.9
    assert knn["num_samples"] == 540
    assert knn["config"]["model"] == "pixel" and "torch" in knn["versions"]
    assert recs["digits-retrieval"]["details"]["num_captions"] == 3 * 540


def test_existing_results_are_skipped_unless_overwrite(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn")).code == 0
    path = next((tmp_path / "out").rglob("knn.json"))
    first = path.read_text()
    path.write_text(first.replace('"seconds"', '"seconds_marker_kept"'))
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn"))
    assert res.code == 0 and "exists" in res.out
    assert "seconds_marker_kept" in path.read_text()
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "--overwrite")).code == 0
    assert "seconds_marker_kept" not in path.read_text()
    assert not list(path.parent.glob("*.tmp"))


def test_second_protocol_on_same_data_reuses_cached_features(cli, tmp_path):
    from itra_test_plugin import PixelModel

    PixelModel.images_encoded = 0
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn,digits-clustering")).code == 0
    # train (1257) + test (540) once each, although two tasks used the test split.
    assert PixelModel.images_encoded == 1257 + 540
    assert cli(*run_args(tmp_path, "--tasks", "digits-linear-probe")).code == 0
    assert PixelModel.images_encoded == 1257 + 540


@pytest.mark.parametrize(("tasks", "suggestion"), [("digts-knn", "digits-knn"),
                                                   ("dem", "demo")])
def test_unknown_task_or_suite_suggests_close_names(cli, tmp_path, tasks, suggestion):
    res = cli(*run_args(tmp_path, "--tasks", tasks))
    assert res.code == 2
    assert f"unknown task {tasks!r}" in res.err and repr(suggestion) in res.err
    assert "Traceback" not in res.err


def test_unknown_model_scheme_suggests_close_names(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "demo", model="pixle:x"))
    assert res.code == 2 and "unknown model scheme 'pixle'" in res.err and "'pixel'" in res.err


def test_model_without_weights_is_refused_unless_random_init(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", model="pixel:needs-weights"))
    assert res.code == 2 and "--random-init" in res.err
    ok = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--random-init",
                       model="pixel:needs-weights"))
    assert ok.code == 0, ok


def test_debug_shows_traceback(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "nope", "--debug"))
    assert res.code == 2 and "Traceback" in res.err


def test_task_needing_a_missing_modality_is_skipped_with_reason(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "digits-zeroshot,digits-knn",
                        model="pixel:image-only"))
    assert res.code == 0, res
    assert "skip" in res.err and "text" in res.err
    assert set(records(tmp_path / "out")) == {"digits-knn"}
    only = cli(*run_args(tmp_path, "--tasks", "digits-zeroshot", model="pixel:text-only"))
    assert only.code == 2 and "image" in only.err


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_imagefolder_task_runs_every_protocol(cli, tmp_path):
    make_image_folder(tmp_path / "data" / "pets")
    for protocol in ("zeroshot", "linear_probe", "knn", "clustering"):
        task = write_yaml(tmp_path / f"{protocol}.yaml",
                          f"name: pets-{protocol}\nprotocol: {protocol}\nroot: pets\nk: 3\n"
                          "suites: [mine]\n")
        res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data"))
        assert res.code == 0, res
    recs = records(tmp_path / "out")
    assert set(recs) == {f"pets-{p}" for p in ("zeroshot", "linear_probe", "knn", "clustering")}
    # The colours separate the two classes perfectly.
    assert recs["pets-knn"]["main_score_value"] == 1.0
    assert recs["pets-linear_probe"]["main_score_value"] == 1.0
    assert recs["pets-zeroshot"]["num_samples"] == 12


def test_yaml_retrieval_task_on_caption_table(cli, tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = ["filepath\ttitle"]
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 10, 200 - 20 * i)).save(data / "img" / f"{i}.png")
        rows += [f"img/{i}.png\tpicture number {i}", f"img/{i}.png\tanother caption {i}"]
    (data / "captions.tsv").write_text("\n".join(rows) + "\n")
    task = write_yaml(tmp_path / "r.yaml", "name: caps\nprotocol: retrieval\n"
                                           "file: captions.tsv\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", data))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["caps"]
    assert rec["details"] == {"num_images": 8, "num_captions": 16}
    assert set(rec["metrics"]) >= {"image_retrieval_recall@1", "text_retrieval_recall@5",
                                   "mean_recall"}


def test_malformed_caption_line_is_named(cli, tmp_path):
    (tmp_path / "c.tsv").write_text("filepath\ttitle\na.png\tok\nb.png\n")
    task = write_yaml(tmp_path / "r.yaml", "name: caps\nprotocol: retrieval\nfile: c.tsv\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path))
    assert res.code == 2 and "c.tsv, line 3" in res.err


def test_missing_data_folder_names_path_and_layout(cli, tmp_path):
    task = write_yaml(tmp_path / "t.yaml", "name: pets\nprotocol: knn\nroot: pets\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "nowhere"))
    assert res.code == 2
    assert str(tmp_path / "nowhere" / "pets" / "train") in res.err
    assert "expected layout" in res.err and "<class name>" in res.err


@pytest.mark.parametrize(("body", "message"), [
    ("name: x\nprotocol: knn\nroot: r\ntemplate: ['a {}']\n",
     "unknown key 'template' (did you mean 'templates'?)"),
    ("name: x\nprotocol: knn\n", "missing required key 'root'"),
    ("protocol: zeroshot\nroot: r\n", "missing required key 'name'"),
    ("name: x\nprotocol: knn\nroot: r\nk: ten\n", "key 'k' must be a int"),
    ("name: x\nprotocol: zero-shot\nroot: r\n", "task type 'zero-shot'"),
    ("name: x\nprotocol: zeroshot\nroot: r\ntemplates: ['a photo']\n", "has no '{}' slot"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_yaml_task_errors_name_the_file_and_key(cli, tmp_path, body, message):
    task = write_yaml(tmp_path / "bad.yaml", body)
    res = cli(*run_args(tmp_path, "--tasks", task))
    assert res.code == 2, res
    assert str(task) in res.err and message in res.err
    assert "Traceback" not in res.err


def test_corrupt_image_is_named_or_skipped_and_counted(cli, tmp_path):
    root = make_image_folder(tmp_path / "data" / "pets", splits=("test",))
    bad = root / "test" / "dog" / "3.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    task = write_yaml(tmp_path / "t.yaml", "name: pets\nprotocol: clustering\nroot: pets\n")
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data"))
    assert res.code == 2 and str(bad) in res.err and "--skip-corrupt" in res.err
    res = cli(*run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data",
                        "--skip-corrupt"))
    assert res.code == 0, res
    rec = records(tmp_path / "out")["pets"]
    assert rec["num_samples"] == 11
    assert rec["details"]["skipped_corrupt"] == [str(bad)]
    assert "skipped 1 corrupt image" in res.err


def test_results_command_writes_leaderboard_with_complete_suite_averages(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "demo")).code == 0
    assert cli(*run_args(tmp_path, "--tasks", "digits-knn", "digits-clustering",
                         model="pixel:image-only")).code == 0
    res = cli("results", tmp_path / "out")
    assert res.code == 0, res
    csv_text = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    header = csv_text[0].split(",")
    assert header[:2] == ["model", "avg:demo"]
    rows = {line.split(",")[0]: line.split(",") for line in csv_text[1:]}
    assert set(rows) == {"pixel", "pixel:image-only"}
    full = rows["pixel"]
    recs = {r["task"]: r for _, r in iter_records(tmp_path / "out")
            if r["model"]["name"] == "pixel"}
    mean = sum(r["main_score_value"] for r in recs.values()) / 5
    assert float(full[1]) == pytest.approx(mean)
    # The image-only model lacks three demo tasks: no (misleading) suite average.
    assert rows["pixel:image-only"][1] == ""
    knn_col = header.index("digits-knn")
    assert float(full[knn_col]) == pytest.approx(recs["digits-knn"]["main_score_value"])
    assert "digits-knn/mean_per_class_recall" in header
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| model | avg:demo |" in md and "pixel:image-only" in md


def test_results_of_empty_folder_is_an_error(cli, tmp_path):
    res = cli("results", tmp_path)
    assert res.code == 2 and "no itra-bench result files" in res.err


def test_result_documents_are_valid_json_with_provenance(cli, tmp_path):
    assert cli(*run_args(tmp_path, "--tasks", "digits-clustering")).code == 0
    path = next((tmp_path / "out").rglob("clustering.json"))
    rec = json.loads(path.read_text())
    assert rec["schema"] == "itra-bench/result/v1"
    assert set(rec["metrics"]) == {"nmi", "ami"}
    assert rec["model"]["fingerprint"] and rec["started_at"] and rec["seconds"] >= 0


def test_cuda_without_gpu_and_fp16_on_cpu_are_user_errors(cli, tmp_path):
    import torch

    if not torch.cuda.is_available():
        res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--device", "cuda"))
        assert res.code == 2 and "no CUDA device" in res.err
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--device", "cpu",
                        "--precision", "amp_fp16"))
    assert res.code == 2 and "amp_fp16 needs a CUDA device" in res.err


def test_bf16_autocast_on_cpu_runs(cli, tmp_path):
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn", "--device", "cpu",
                        "--precision", "amp_bf16"))
    assert res.code == 0, res
    assert records(tmp_path / "out")["digits-knn"]["config"]["precision"] == "amp_bf16"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "amp_bf16", "amp_fp16"])
def test_demo_on_cuda_matches_cpu(cli, tmp_path, precision):
    cpu = cli(*run_args(tmp_path / "cpu", "--tasks", "digits-knn", "--device", "cpu"))
    gpu = cli(*run_args(tmp_path / "gpu", "--tasks", "digits-knn", "--device", "cuda",
                        "--precision", precision))
    assert cpu.code == 0 and gpu.code == 0, (cpu, gpu)
    a = records(tmp_path / "cpu" / "out")["digits-knn"]["main_score_value"]
    b = records(tmp_path / "gpu" / "out")["digits-knn"]["main_score_value"]
    assert abs(a - b) < 0.02


def test_weights_for_another_architecture_is_one_clear_error(cli, tmp_path):
    import copy

    import open_clip
    import torch

    from itra_bench.plugins.openclip_models import PACKAGED_CONFIGS

    demo_config = json.loads((PACKAGED_CONFIGS / "itra-demo.json").read_text())
    (tmp_path / "tiny.json").write_text(json.dumps(demo_config))
    other = copy.deepcopy(demo_config)
    other["vision_cfg"]["layers"] = 3
    torch.save(open_clip.CLIP(**other).state_dict(), tmp_path / "other.pt")
    res = cli(*run_args(tmp_path, "--tasks", "digits-knn",
                        model=f"openclip:{tmp_path / 'tiny.json'}@{tmp_path / 'other.pt'}"))
    assert res.code == 2, res
    assert str(tmp_path / "other.pt") in res.err and "unexpected keys" in res.err
    assert "visual.transformer.resblocks.2" in res.err
    assert "Traceback" not in res.err


def test_changed_image_invalidates_cached_features(cli, tmp_path):
    from itra_test_plugin import PixelModel

    make_image_folder(tmp_path / "data" / "pets", splits=("test",))
    task = write_yaml(tmp_path / "t.yaml", "name: pets\nprotocol: clustering\nroot: pets\n")
    args = run_args(tmp_path, "--tasks", task, "--data-root", tmp_path / "data", "--overwrite")
    PixelModel.images_encoded = 0
    assert cli(*args).code == 0
    assert cli(*args).code == 0
    assert PixelModel.images_encoded == 12  # the rerun came from the cache
    Image.new("RGB", (24, 24), (1, 2, 3)).save(tmp_path / "data/pets/test/cat/0.jpg")
    assert cli(*args).code == 0
    assert PixelModel.images_encoded == 24
