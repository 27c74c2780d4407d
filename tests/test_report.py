"""``itra-bench report``: one self-contained HTML file (leaderboard, per-suite charts with
interval error bars, the ELEVATER summary, a training run's curves over epochs), checked
by opening it in headless Chromium: it loads with no console error and no network, and every
chart decodes."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_data import TINY, digits_csv

from itra_bench.results import ResultStore, iter_records

REQUIRE_CHROMIUM = "ITRA_REQUIRE_CHROMIUM"
TASKS = ["digits-zeroshot", "digits-knn", "digits-retrieval"]
ELEVATER = ["caltech-101", "cifar-10", "cifar-100", "country211", "dtd", "eurosat_clip",
            "fer-2013", "fgvc-aircraft-2013b-variants102", "food-101", "gtsrb",
            "hateful-memes", "kitti-distance", "mnist", "oxford-flower-102",
            "oxford-iiit-pets", "patch-camelyon", "rendered-sst2", "resisc45_clip",
            "stanford-cars", "voc-2007-classification"]


# ---------------------------------------------------------------------------------------------
# Headless Chromium


def chromium() -> str:
    """The Chromium executable; without one the test is skipped, unless CI demands it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get(REQUIRE_CHROMIUM) == "1":
        pytest.fail(f"{REQUIRE_CHROMIUM}=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("headless Chromium is not installed (apt-get install chromium); "
                f"CI sets {REQUIRE_CHROMIUM}=1 to require it")


def open_in_chromium(page: Path, scratch: Path, screenshot: Path | None = None
                     ) -> tuple[str, list[str]]:
    """Load ``page`` in headless Chromium (network off): the DOM after the load event, and
    the problems seen: console messages (errors, blocked loads), a non-zero exit, images
    that are not data: URIs or did not decode."""
    exe = chromium()
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={scratch / 'chromium-profile'}", "--enable-logging=stderr",
              "--v=0", "--virtual-time-budget=5000"]
    proc = subprocess.run([*common, "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    problems = []
    if proc.returncode != 0:
        problems.append(f"chromium exited {proc.returncode}")
    # Chromium logs every console message of the page (errors, CSP-blocked loads, uncaught
    # exceptions) as `INFO:CONSOLE...`; the report itself logs nothing.
    problems += [line for line in proc.stderr.splitlines()
                 if ":CONSOLE" in line or "Failed to load resource" in line]
    dom = proc.stdout
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", dom)
    problems += [f"image not embedded: {src[:80]}" for src in sources
                 if not src.startswith("data:image/")]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    if sources and (not loaded or loaded.group(1) != loaded.group(2)
                    or int(loaded.group(2)) != len(sources)):
        problems.append(f"not every image decoded: {loaded.group(0) if loaded else 'no marker'}"
                        f" for {len(sources)} images")
    if screenshot is not None:
        shot = subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1400,2000",
                               page.resolve().as_uri()], capture_output=True, text=True,
                              timeout=120)
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return dom, problems


def test_the_chromium_check_catches_a_broken_page(tmp_path):
    """The checks below can fail: an error, a missing picture, an external image."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img src=\"file:///nonexistent/x.png\">"
                    "<script>console.error('boom');</script></body></html>")
    _, problems = open_in_chromium(page, tmp_path)
    assert any("boom" in p for p in problems), problems
    assert any("not embedded" in p for p in problems), problems
    assert any("not every image decoded" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------
# Real runs: a tiny training run (2 epochs), its watch results, and a results folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """``logs/run`` of a tiny 2-epoch itra-train run, evaluated by ``itra-bench watch`` on
    three of the demo suite's tasks (the linear probe's tuning would add a minute)."""
    from itra_bench.cli import main as bench
    from itra_train.cli import main as train

    root = tmp_path_factory.mktemp("training")
    data = digits_csv(root / "digits", 128)
    assert train(["--train-data", str(data), "--logs", str(root / "logs"), "--name", "run",
                  *TINY, "--epochs", "2"]) == 0
    run = root / "logs" / "run"
    assert bench(["watch", str(run), "--tasks", *TASKS, "--once", "--workers", "0"]) == 0
    return run


def _model_names(root: Path) -> set[str]:
    return {record["model"]["name"] for _, record in iter_records(root)}


def _assert_results_page(doc: str, models: set[str]) -> None:
    for name in [*models, *TASKS]:
        assert html.escape(name) in doc, name
    # Leaderboard cells read like the terminal's: score ± half-width where the interval is
    # symmetric, else score [low, high].
    assert re.search(r"\d+\.\d\d( ± \d+\.\d\d| \[\d+\.\d\d, \d+\.\d\d\])</td>", doc)
    assert 'id="suite-demo"' in doc and 'id="epochs"' not in doc
    # One chart per suite, embedded.
    assert doc.count("data:image/png;base64,") == 1


@pytest.mark.slow
def test_report_of_a_results_folder_opens_in_chromium(cli, run_folder, tmp_path):
    # The watch results alone are a plain results folder: two models (the two epochs'
    # checkpoints), no epochs section.
    results = run_folder / "watch-results"
    models = _model_names(results)
    assert len(models) == 2
    page = tmp_path / "report.html"
    res = cli("report", results, "-o", page)
    assert res.code == 0, res
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "http://" not in text and "https://" not in text
    _assert_results_page(text, models)
    # The page as a browser shows it (skipped here, not in CI, without Chromium).
    dom, problems = open_in_chromium(page, tmp_path, tmp_path / "results.png")
    assert not problems, problems
    _assert_results_page(dom, models)


def _assert_run_page(doc: str, models: set[str]) -> None:
    assert 'id="epochs"' in doc and 'id="suite-demo"' in doc
    for name in [*models, *TASKS]:
        assert html.escape(name) in doc, name
    # The epochs table: each task's score per epoch, epochs in order.
    section = doc[doc.index('id="epochs"'):]
    assert re.search(r"<td[^>]*>1</td>.*<td[^>]*>2</td>", section, re.S)
    assert doc.count("data:image/png;base64,") == 2  # the demo suite's bars, the curves


@pytest.mark.slow
def test_report_of_a_training_run_has_the_curves_over_epochs(cli, run_folder, tmp_path):
    models = _model_names(run_folder / "watch-results")
    page = tmp_path / "run.html"
    res = cli("report", run_folder, "-o", page)
    assert res.code == 0, res
    _assert_run_page(page.read_text(), models)
    dom, problems = open_in_chromium(page, tmp_path, tmp_path / "run.png")
    assert not problems, problems
    _assert_run_page(dom, models)


# ---------------------------------------------------------------------------------------------
# Written results: ELEVATER's 20 datasets, escaping, bad input (no model runs needed)


def _write_result(store: ResultStore, model: str, task: str, value: float, *,
                  suites: tuple[str, ...] = (), protocol: str = "zeroshot",
                  variant: str = "default", interval: tuple[float, float] | None = None,
                  details: dict | None = None, fingerprint: str = "f" * 16) -> None:
    path = store.path(model, fingerprint, task, variant)
    store.write(path, {
        "model": {"name": model, "fingerprint": fingerprint, "modalities": ["image", "text"]},
        "task": task, "variant": variant, "protocol": protocol, "suites": list(suites),
        "main_score": "acc1", "main_score_value": value,
        "main_score_interval": None if interval is None else {
            "low": interval[0], "high": interval[1], "confidence": 0.95, "resamples": 100,
            "seed": 0},
        "metrics": {"acc1": value}, "details": details or {}})


@pytest.fixture
def elevater_results(tmp_path) -> Path:
    """Two models on ELEVATER's 20 datasets (zero-shot; the second without intervals on
    half of them) and one extra task outside any suite."""
    store = ResultStore(tmp_path / "elevater")
    for m, model in enumerate(["clip-a", "clip-b"]):
        for i, task in enumerate(ELEVATER):
            value = 0.3 + 0.03 * i + 0.05 * m
            ci = (value - 0.02, value + 0.01) if m == 0 or i % 2 else None
            _write_result(store, model, task, value, suites=("elevater",), protocol="elevater",
                          variant="zeroshot", interval=ci,
                          details={"mode": "zeroshot", "n_shot": 0, "seed": 0},
                          fingerprint=f"{m}" * 16)
        _write_result(store, model, "sts-b", 0.5 + 0.1 * m, fingerprint=f"{m}" * 16)
    return store.root


def test_report_with_elevater_summary_and_twenty_tasks(cli, elevater_results, tmp_path):
    page = tmp_path / "elevater.html"
    res = cli("report", elevater_results, "-o", page)
    assert res.code == 0, res
    text = page.read_text()
    assert 'id="elevater-summary"' in text and "clip-a: zeroshot" in text
    # The average over the 20 datasets, as the terminal summary gives it.
    avg_a = 100 * sum(0.3 + 0.03 * i for i in range(20)) / 20
    assert f"{avg_a:.2f}" in text
    assert 'id="suite-elevater-zeroshot"' in text and 'id="suite-other-tasks"' in text
    for name in [*ELEVATER, "sts-b", "clip-a", "clip-b", "avg:elevater/zeroshot"]:
        assert html.escape(name) in text, name
    dom, problems = open_in_chromium(page, tmp_path, tmp_path / "elevater.png")
    assert not problems, problems
    assert dom.count("data:image/png;base64,") == 2


def test_every_name_is_escaped(tmp_path):
    from itra_bench.report import render_report

    store = ResultStore(tmp_path / "r")
    evil = "<img src=x onerror=alert(1)>&"
    _write_result(store, evil, "t<b>", 0.5, suites=("s\"uite",), interval=(0.4, 0.6))
    text = render_report(tmp_path / "r")
    assert evil not in text and "t<b>" not in text and 's"uite' not in text
    assert html.escape(evil) in text and html.escape("t<b>") in text


def test_bad_input_is_a_clear_error(cli, tmp_path):
    res = cli("report", tmp_path / "nowhere", "-o", tmp_path / "r.html")
    assert res.code == 2 and "not found" in res.err and "nowhere" in res.err
    (tmp_path / "empty").mkdir()
    res = cli("report", tmp_path / "empty", "-o", tmp_path / "r.html")
    assert res.code == 2 and "no itra-bench result files" in res.err
    run = tmp_path / "logs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    res = cli("report", run, "-o", tmp_path / "r.html")
    assert res.code == 2 and "itra-bench watch" in res.err
    assert not (tmp_path / "r.html").exists()


def test_report_imports_no_deep_learning_stack(elevater_results, tmp_path):
    """Reports are quick: matplotlib but never torch; ``report --help`` not even matplotlib."""
    probe = ("import sys; from itra_bench.cli import main; code = main(sys.argv[1:]); "
             "print('LOADED', code, sorted(m for m in ('torch', 'matplotlib') "
             "if m in sys.modules))")
    for args, loaded in ((["--help"], "[]"),
                         ([str(elevater_results), "-o", str(tmp_path / "r.html")],
                          "['matplotlib']")):
        proc = subprocess.run([sys.executable, "-c", probe, "report", *args],
                              capture_output=True, text=True, timeout=300)
        line = [x for x in proc.stdout.splitlines() if x.startswith("LOADED")]
        assert line and line[-1] == f"LOADED 0 {loaded}", \
            proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize(("model", "epoch"), [
    ("/logs/run/checkpoints/epoch_12.pt", 12),  # itra-bench watch
    ("run@epoch_3", 3),  # evaluation during training (eval/)
    ("logs/run/checkpoints/epoch_2.pt (0123abcd)", 2),  # two weights under one name
    ("epoch_latest.pt", None), ("openclip:ViT-B-32@laion2b", None), ("my_epoch_2_model", None),
])
def test_epoch_of_model_names(model, epoch):
    from itra_bench.report_data import epoch_of

    assert epoch_of(model) == epoch
