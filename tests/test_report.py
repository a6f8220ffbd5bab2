"""The HTML report: real runs (ASHA with a failing trial; NSGA-II multi-objective), its
sections and figures, and a real headless Chromium rendering it (images decoded, no errors)."""

from __future__ import annotations

import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline.report import (
    MIN_TRIALS_FOR_IMPORTANCE,
    importances,
    optuna_distributions,
    pareto_mask,
    write_report,
)
from pipeline.results import Results
from pipeline.space import SearchSpace
from tests.conftest import tiny_spec

SECTIONS = ["summary", "best-so-far", "learning-curves", "parallel-coordinates",
            "importances", "top-trials"]
FIGURES = ["best_so_far.png", "learning_curves.png", "parallel_coordinates.png", "importances.png"]
EPOCHS = 3


# ---------------------------------------------------------------- no Ray needed


def test_pareto_mask_respects_each_mode():
    values = np.array([[0.9, 100], [0.8, 50], [0.7, 80], [0.9, 120], [0.8, 50]])
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, True, False, False, True]
    assert pareto_mask(values, ["min", "max"]).tolist() == [False, False, True, True, False]
    assert pareto_mask(np.zeros((0, 2)), ["max", "min"]).tolist() == []


def test_importances_report_too_few_trials_instead_of_failing():
    space = SearchSpace.from_dict(tiny_spec(Path("."))["space"])
    configs = [{"units": 8, "learning_rate": 0.01}, {"units": 16, "learning_rate": 0.002},
               {"units": 24, "learning_rate": 0.02}]
    imp = importances(space, configs, [[0.5], [math.nan], [0.6]], ["val_accuracy"], ["max"])
    assert imp.table is None
    assert any(f"too few finished trials to estimate importances (2 < "
               f"{MIN_TRIALS_FOR_IMPORTANCE})" in n for n in imp.notes), imp.notes


def test_importances_on_conditional_space_with_values_beyond_the_bounds():
    space = SearchSpace.from_dict({
        "layers": {"type": "int", "low": 1, "high": 2},
        "units_2": {"type": "choice", "values": [4, 12], "when": {"layers": [2]}},
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "frozen": {"type": "fixed", "value": 3},
    })
    rng = np.random.default_rng(0)
    configs, values = [], []
    for i in range(12):
        cfg = {"layers": 1 + i % 2, "learning_rate": float(10 ** rng.uniform(-3, -1))}
        if cfg["layers"] == 2:
            cfg["units_2"] = [4, 12][i // 2 % 2]
        configs.append(cfg)
        values.append([-abs(math.log10(cfg["learning_rate"]) + 2) + 0.1 * cfg["layers"]])
    configs[0]["learning_rate"] = 0.15  # PBT perturbed it past `high`
    dists = optuna_distributions(space, {"learning_rate": [0.15]})
    assert set(dists) == {"layers", "units_2", "learning_rate"}  # fixed ones are not searched
    assert dists["learning_rate"].high == pytest.approx(0.15) and dists["learning_rate"].log
    imp = importances(space, configs, values, ["val_accuracy"], ["max"])
    assert list(imp.table.columns) == ["PED-ANOVA (val_accuracy)", "fANOVA (val_accuracy)"]
    assert imp.table.index[0] == "learning_rate"
    assert "units_2" in imp.table.index  # PED-ANOVA assesses conditional parameters
    assert imp.table.loc["units_2", "fANOVA (val_accuracy)"] == 0.0
    assert any("conditional parameters left out" in n and "units_2" in n for n in imp.notes)


# ------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def asha_report(ray_session, tmp_path_factory):
    """ASHA over manual points: some trials stopped early, one failed (NaN loss)."""
    tmp = tmp_path_factory.mktemp("asha")
    # the best point first, so ASHA (median cut-off) stops the later, slower learners
    points = [{"poison": False, "learning_rate": lr} for lr in (0.03, 0.003, 0.001)]
    points.insert(1, {"poison": True, "learning_rate": 0.01})
    space = {"poison": {"type": "choice", "values": [False, True]},
             "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}
    pipeline.run(tiny_spec(tmp, space=space, model={"builder": "tests.models:nan_or_fine"},
                           searcher={"name": "manual", "points_to_evaluate": points},
                           scheduler={"name": "asha",
                                      "options": {"grace_period": 1, "reduction_factor": 2}},
                           training={"epochs": EPOCHS}), progress=False)
    res = Results.open(str(tmp / "results" / "tiny"))  # from storage alone, as the CLI does
    return res, write_report(res, tmp / "report")


@pytest.fixture(scope="module")
def pareto_report(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nsga2")
    pipeline.run(tiny_spec(tmp, objective={"metric": ["val_accuracy", "num_params"],
                                           "mode": ["max", "min"]},
                           searcher={"name": "nsga2", "options": {"population_size": 2}},
                           search={"trials": 4}), progress=False)
    res = Results.open(str(tmp / "results" / "tiny"))
    return res, write_report(res, tmp / "report")


def test_report_has_every_section_and_marks_stopped_and_failed_trials(asha_report):
    res, index = asha_report
    assert index.name == "index.html" and index.is_file()
    for name in FIGURES:
        assert (index.parent / name).stat().st_size > 5_000, name
    assert not (index.parent / "pareto.png").exists()
    page = index.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    assert 'id="pareto"' not in page
    # self-contained: figures inline, nothing fetched from elsewhere
    assert page.count('<img src="data:image/png;base64,') == len(FIGURES)
    for needle in ('src="http', "href=\"http", "url(", "<script src", "<link rel=\"stylesheet"):
        assert needle not in page, needle

    df = res.dataframe()
    stopped = df[(df["status"] == "TERMINATED") & (df["epochs"] < EPOCHS)]
    assert len(stopped) >= 1, "ASHA stopped nothing early"
    assert (df["status"] == "ERROR").sum() == 1
    assert page.count('<span class="badge stopped-early">') == 2 * len(stopped)  # trials + top
    assert page.count('<span class="badge failed">') == 1  # failed trials are not in the top
    for tid in stopped["trial_id"]:
        assert tid in page
    assert "diverged" in page  # the failure's reason
    # importances: a table row per searched parameter, from Optuna's evaluators
    imp = page.split('<section id="importances">')[1].split("</section>")[0]
    assert "PED-ANOVA (val_accuracy)" in imp and "fANOVA (val_accuracy)" in imp
    assert "<td class=\"text\">learning_rate</td>" in imp
    # top trials: best first, as the leaderboard
    top = page.split('<section id="top-trials">')[1]
    assert top.index(res.leaderboard().iloc[0]["trial_id"]) < top.index(
        res.leaderboard().iloc[-1]["trial_id"])


def test_multi_objective_report_lists_the_pareto_front(pareto_report):
    res, index = pareto_report
    page = index.read_text()
    assert '<section id="pareto">' in page and (index.parent / "pareto.png").is_file()
    df = res.dataframe()
    front = df[pareto_mask(df[["val_accuracy", "num_params"]].to_numpy(), ["max", "min"])]
    section = page.split('<section id="pareto">')[1]
    rows = section.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.count("<tr") == len(front) >= 1
    for tid in front["trial_id"]:
        assert f">{tid}<" in rows
    for tid in df.loc[~df["trial_id"].isin(front["trial_id"]), "trial_id"]:
        assert tid not in rows
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid


# ---------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


class _CheckMarker(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: dict[str, str] | None = None
        self.text = ""
        self._inside = False

    def handle_starttag(self, tag, attrs):
        if dict(attrs).get("id") == "check":
            self.attrs, self._inside = {k: v or "" for k, v in attrs}, True

    def handle_endtag(self, tag):
        self._inside = False

    def handle_data(self, data):
        if self._inside:
            self.text += data


def _chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _render(index: Path, tmp: Path, shot: Path | None = None) -> dict[str, str]:
    """Open ``index`` in headless Chromium; the page's <div id="check"> after load (+ screenshot)."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")
    url = index.resolve().as_uri()
    extra = [f"--screenshot={shot}", "--window-size=1280,4000"] if shot else []
    # one browser run: the DOM after load (scripts ran) and, where asked, the screenshot
    done = _chromium(exe, tmp, "--virtual-time-budget=5000", "--dump-dom", *extra, url)
    if shot and not shot.is_file():  # a Chromium that runs one headless command at a time
        _chromium(exe, tmp, *extra, url)
    marker = _CheckMarker()
    marker.feed(done.stdout)
    assert marker.attrs is not None, f"no DOM dumped: {done.stderr[-2000:]}"
    return {**marker.attrs, "text": marker.text}


@pytest.mark.parametrize("which", ["asha_report", "pareto_report"])
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    _, index = request.getfixturevalue(which)
    shot = index.parent / "report.png"
    check = _render(index, tmp_path, shot)
    assert check["data-loaded"] == "1", "the page's load event never ran"
    n = index.read_text().count("<img ")
    assert n >= len(FIGURES)
    assert check["data-images-ok"] == f"{n}/{n}", check["text"]
    assert check["data-errors"] == "0", check["text"]

    assert shot.is_file(), "no screenshot"
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 4000)
        pixels = np.asarray(img.convert("RGB"), dtype=float)
    assert pixels.std() > 20, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "the screenshot has no figures"


def test_the_page_check_catches_broken_images_remote_fetches_and_script_errors(
        pareto_report, tmp_path):
    _, index = pareto_report
    bad = tmp_path / "bad.html"
    bad.write_text(index.read_text().replace("<main>", (
        '<main><img src="data:image/png;base64,AAAA" alt="broken">'
        '<img src="http://192.0.2.1/x.png" alt="remote"><script>noSuchFunction();</script>'), 1))
    check = _render(bad, tmp_path)
    n = bad.read_text().count("<img ")
    assert check["data-loaded"] == "1"
    assert check["data-images-ok"] == f"{n - 2}/{n}"
    assert "noSuchFunction" in check["text"]
    assert "blocked by the content security policy: http://192.0.2.1/x.png" in check["text"]
    assert int(check["data-errors"]) >= 3
