"""advlab report: sections come from the artefacts, the file is self-contained, numbers are the saved ones."""

import base64
import json
import os
import re
import shutil
import stat

import pytest

from advlab.cli import main
from advlab.cli.common import file_size
from advlab.evaluate.stats import clopper_pearson
from advlab.report.html import build_report, collect, sections, write_report

from report_run import report_run_dir  # noqa: F401  (fixture)

# slow: the shared quick-demo fixture takes 15-40 s; one xdist group so it is made once per `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report")]


@pytest.fixture
def run_root(report_run_dir):  # noqa: F811
    return report_run_dir


def images(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def test_report_has_every_section_and_is_self_contained(run_root, capsys):
    assert main(["report", str(run_root), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["report"] == str(run_root / "report.html")
    assert {"demo", "runs", "curves", "grids", "sliders", "evals", "per_class", "distances", "transfer",
            "configs"} <= set(record["sections"])
    html = (run_root / "report.html").read_text()
    srcs = images(html)
    assert len(srcs) >= 10
    for src in srcs:  # every picture inline, and a real PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing fetched from anywhere: no external scripts, styles or images
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html
    for name in ("monotone", "unbounded", "single_step"):  # the checklist, with the doc pages
        assert f"docs/checks/{name}.md" in html
    assert "@media print" in html


def test_the_report_is_written_with_the_umask_and_its_size_printed_in_a_fitting_unit(run_root, tmp_path, capsys):
    """Issue 25: report.html was 0600 (tempfile.mkstemp) and an 84 KB file was printed as "(0.1 MB)"."""
    small = tmp_path / "only-a-model"  # a report of some KB
    small.mkdir()
    for name in ("card.json", "model.safetensors"):
        shutil.copy(run_root / "adversarial" / name, small / name)
    for root in (run_root, small):
        old = os.umask(0o022)
        try:
            assert main(["report", str(root)]) == 0
        finally:
            os.umask(old)
        path = root / "report.html"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        size = path.stat().st_size
        printed = re.search(r"report written to .* \(([0-9.]+) (B|KB|MB|GB)\):", capsys.readouterr().out)
        assert printed, "no size printed"
        value, unit = float(printed[1]), printed[2]
        scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
        assert 1 <= value < 1000 and abs(value * scale - size) <= 0.05 * size, (printed[0], size)
    assert size < 1e5


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (84_321, "84 KB"),
                                     (999_600, "1.0 MB"), (1_234_567, "1.2 MB"), (12_345_678, "12 MB")])
def test_file_sizes_read_in_a_fitting_unit(n, text):
    assert file_size(n) == text


def test_an_evaluation_shows_its_attacks_and_its_checks_apart(run_root, tmp_path):
    """Issue 25: the evaluation's seconds mixed the attacks with the checks. The report shows both, their passes,
    and, when the checks take longer than the attacks, what they cost and how to bound them."""
    from advlab.report.entries import fmt
    path, ctx = write_report(run_root)
    html = path.read_text()
    rec = json.loads((run_root / "standard" / "eval" / "fast-linf" / "result.json").read_text())
    assert rec["checks"] and rec["check_n"] > 0
    assert (f"({fmt(rec['seconds'], 3)} s: attacks {fmt(rec['suite_seconds'], 3)} s,\n    gradient-masking checks "
            f"{fmt(rec['checks_seconds'], 3)} s)") in html
    assert (f"{rec['passes']['forward']} forward and {rec['passes']['backward']}\n    backward passes (image rows) for "
            f"the attacks,\n    {rec['checks_passes']['forward']} forward and {rec['checks_passes']['backward']} backward "
            f"for the checks on {rec['check_n']} points") in html
    config = next(c for c in ctx["configs"] if c["run"] == "standard")
    timings = dict(config["timings"])
    assert timings["evaluate fast suite (linf): attacks"] == rec["suite_seconds"]
    assert timings[f"evaluate fast suite (linf): gradient-masking checks on {rec['check_n']} points"] == \
        rec["checks_seconds"]
    # A copy of the run whose checks took 60x the attacks, and one whose checks were quick.
    for checks_seconds, noted in ((60 * rec["suite_seconds"], True), (rec["suite_seconds"] / 2, False)):
        copy = tmp_path / f"checks-{noted}"
        shutil.copytree(run_root / "standard", copy, ignore=shutil.ignore_patterns("attacks", "transfer", "*.html"))
        path = copy / "eval" / "fast-linf" / "result.json"
        path.write_text(json.dumps({**rec, "checks_seconds": checks_seconds}))
        html = build_report(copy).read_text()
        note = re.search(r'<p class="checks-cost">(.*?)</p>', html, re.S)
        assert bool(note) == noted
        if noted:
            assert f"took {fmt(checks_seconds, 3)} s on {rec['check_n']} points" in note[1]
            assert "--check-n" in note[1] and "--no-checks" in note[1]


def test_one_epsilon_is_points_and_two_suites_are_told_apart(run_root, tmp_path):
    """Issue 25: one eps was a straight line from (0, clean) to (eps, robust), and two suites on one model got the
    same colour on top of each other."""
    from advlab import plotting
    run = tmp_path / "run"
    shutil.copytree(run_root / "standard", run, ignore=shutil.ignore_patterns("transfer", "*.html"))
    rec = json.loads((run / "eval" / "fast-linf" / "result.json").read_text())
    assert len(rec["results"]) == 1  # the quick demo evaluates at one budget
    (run / "eval" / "standard-linf").mkdir()
    (run / "eval" / "standard-linf" / "result.json").write_text(json.dumps({**rec, "suite": "standard"}))
    (curve,) = collect(run)["curves"]
    suites = [s for s in curve["series"] if "suite" in s["label"]]
    attacks = [s for s in curve["series"] if s not in suites]
    assert len(suites) == 2 and attacks and all(len(s["eps"]) > 2 for s in attacks)
    ax = plotting.robustness_figure(curve["series"]).axes[0]
    points = {c.get_label(): c for c in ax.containers}  # markers with error bars
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(points) == {s["label"] for s in suites} and set(lines) == {s["label"] for s in attacks}
    drawn = [points[s["label"]].lines[0] for s in suites]
    for s, line in zip(suites, drawn):
        assert line.get_linestyle() == "None" and line.get_marker() not in (None, "None", "")
        assert list(line.get_ydata()) == pytest.approx(s["acc"])
        assert list(line.get_xdata()) == pytest.approx(s["eps"], abs=0.02 * max(s["eps"]))
    assert drawn[0].get_color() != drawn[1].get_color() and drawn[0].get_marker() != drawn[1].get_marker()
    assert drawn[0].get_xdata()[1] != drawn[1].get_xdata()[1]  # set apart, not on top of each other
    for s in attacks:  # several budgets: still a line through them
        assert lines[s["label"]].get_linestyle() != "None"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {s["label"] for s in curve["series"]}
    assert "no line between them" in build_report(run).read_text()


NETS = """
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""


@pytest.fixture(scope="module")
def external_run(tmp_path_factory):
    """`advlab evaluate --model nets.py:build --weights w.pt` (a trained linear model on digits) and its run."""
    import torch
    from advlab.data import load_dataset
    root = tmp_path_factory.mktemp("external")
    (root / "nets.py").write_text(NETS)
    digits = load_dataset("digits")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(digits.x_train), digits.y_train).backward()
        opt.step()
    torch.save(net.state_dict(), root / "w.pt")
    run = root / "mine"
    assert main(["evaluate", "--model", f"{root}/nets.py:build", "--weights", str(root / "w.pt"), "--dataset", "digits",
                 "--eps", "0.1", "--suite", "fast", "--n", "40", "--no-checks", "--no-progress", "--out", str(run)]) == 0
    return run


def test_an_external_model_is_named_by_its_spec_and_weights(external_run, capsys):
    """Issue 25: the Models table said `defense unknown` and n/a for `--model SPEC --weights W`."""
    card = json.loads((external_run / "card.json").read_text())
    sha = card["model"]["weights_sha256"]
    ctx = collect(external_run)
    (row,) = ctx["runs"]
    assert row["external"] == {"spec": card["model"]["spec"], "weights": "w.pt", "sha256": sha[:12]}
    assert row["defense"]["name"] == "external"
    html = build_report(external_run).read_text()
    table = html[html.index('<section id="runs">'):html.index("</section>", html.index('<section id="runs">'))]
    assert "nets.py:build</code>" in table and "weights w.pt" in table and f"<code>{sha[:12]}</code>" in table
    assert "external" in table and "unknown" not in table


def test_an_evaluation_shows_a_grid_of_its_saved_examples(run_root, external_run):
    """Issue 25: no image grid was shown for an evaluation's saved examples (eval/SUITE-NORM/adversarial.safetensors)."""
    from advlab import plotting
    from advlab.io import load_tensors
    for root, run, key in ((run_root, "standard", "standard"), (external_run, external_run, None)):
        path, ctx = write_report(root)
        name = key or ctx["runs"][0]["name"]
        (grid,) = [g for g in ctx["grids"] if g["run"] == name and g["attack"] == "suite fast (worst case)"]
        ev_dir = (root / run if key else external_run) / "eval" / "fast-linf"
        rec = json.loads((ev_dir / "result.json").read_text())
        t = load_tensors(ev_dir / "adversarial.safetensors")
        assert [g["eps"] for g in grid["grids"]] == [r["eps"] for r in rec["results"]]
        for e, g in enumerate(grid["grids"]):
            fooled = t["broken_by"][e] > 0
            assert fooled.any()
            idx = plotting.fooled_first(fooled, 8)
            probs = t["logits"][e][idx].softmax(1)
            expected = plotting.adversarial_grid_png(t["x"][idx], t["x_adv"][e][idx], t["y"][idx], probs.argmax(1),
                                                     probs.amax(1), rec["classes"],
                                                     title=f"suite fast linf eps={r_eps(rec, e)}: the worst case per point")
            assert g["src"] == plotting.data_uri(expected)
        html = path.read_text()
        assert f"{name} · suite fast (worst case) (linf)" in html and grid["grids"][0]["src"] in html


def test_a_certificate_that_says_little_comes_with_its_hint(run_root, tmp_path, capsys):
    """Issue 25: smoothing a model never trained with noise abstains everywhere; the report says why."""
    run = tmp_path / "run"
    shutil.copytree(run_root / "standard", run, ignore=shutil.ignore_patterns("attacks", "transfer", "eval", "*.html"))
    assert main(["certify", "--run", str(run), "--method", "smoothing", "--sigma", "1", "--samples", "100",
                 "--samples0", "20", "--n", "20", "--no-progress", "--json"]) == 0
    hint = json.loads(capsys.readouterr().out)["hint"]
    assert "not with Gaussian noise of sigma 1" in hint
    html = build_report(run).read_text()
    section = html[html.index('<section id="certified">'):]
    assert "<strong>Hint:</strong> " + hint.replace("'", "&#39;") in section


def r_eps(rec, e):
    return f"{rec['results'][e]['eps']:.4g}"


def test_curve_bands_are_the_clopper_pearson_intervals_of_the_saved_numbers(run_root):
    ctx = collect(run_root)
    saved = json.loads((run_root / "standard" / "attacks" / "pgd-linf" / "result.json").read_text())
    series = [s for c in ctx["curves"] for s in c["series"] if s["label"] == "standard · pgd"]
    assert len(series) == 1
    s = series[0]
    assert s["eps"] == [0.0] + [r["eps"] for r in saved["results"]] and len(s["eps"]) >= 3
    assert s["acc"][0] == pytest.approx(saved["clean_accuracy"])
    n = saved["n"]
    for r, acc, lo, hi in zip(saved["results"], s["acc"][1:], s["lo"][1:], s["hi"][1:]):
        assert acc == pytest.approx(r["robust_accuracy"])
        k = round(r["robust_accuracy"] * n)
        assert (lo, hi) == pytest.approx(clopper_pearson(k, n))
    ev = json.loads((run_root / "standard" / "eval" / "fast-linf" / "result.json").read_text())
    suite = [s for c in ctx["curves"] for s in c["series"] if s["label"].startswith("standard · fast suite")][0]
    assert suite["lo"][1:] == pytest.approx([r["ci95"][0] for r in ev["results"]])


def test_no_worst_case_above_an_attack_or_the_transfer_on_the_same_page(run_root):
    """Issue 19: the evaluation is the worst case over every attack the run records, transfer included."""
    ctx = collect(run_root)
    for key, other in (("standard", "adversarial"), ("adversarial", "standard")):
        assert (run_root / key / "transfer" / f"fgsm-from-{other}-linf" / "adversarial.safetensors").is_file()
        series = [s for c in ctx["curves"] for s in c["series"] if s["group"] == key]
        (suite,) = [s for s in series if "worst case" in s["label"]]
        attacks = [s for s in series if s is not suite]
        assert len(attacks) >= 2 and 0.1 in suite["eps"], ([s["label"] for s in series], suite["eps"])
        transfer = json.loads((run_root / "transfer" / "transfer.json").read_text())
        for s in attacks:  # the demo attacks the suite's points at every budget the suite ran (and more)
            assert s["n"] == suite["n"] and set(suite["eps"]) <= set(s["eps"]), (s["label"], s["eps"], suite["eps"])
            for e, acc in zip(suite["eps"], suite["acc"]):
                assert acc <= s["acc"][s["eps"].index(e)] + 1e-9, (s["label"], e)
        assert transfer["n"] == suite["n"] and transfer["eps"] and set(transfer["eps"]) <= set(suite["eps"])
        for e, err in zip(transfer["eps"], transfer["error"][other][key]):
            assert suite["acc"][suite["eps"].index(e)] <= 1 - err + 1e-9, e
    demo = json.loads((run_root / "demo.json").read_text())["summary"]
    for row in demo["rows"]:  # the demo's own table: the suite column never above FGSM or PGD at that eps
        cells = dict(zip(demo["columns"], row))
        suite_cols = [col for col in cells if " suite @ " in col]
        assert suite_cols, demo["columns"]
        for col in suite_cols:  # the table shows FGSM and PGD at every budget the suite ran
            e = col.split(" @ ")[1]
            for a in ("FGSM", "PGD"):
                assert float(cells[col]) <= float(cells[f"{a} @ {e}"]), (row[0], col, a)


def test_slider_frames_match_the_saved_adversarial_examples(run_root):
    from advlab.io import load_tensors
    from advlab import plotting as figures

    ctx = collect(run_root)
    (slider,) = [s for s in ctx["sliders"] if s["run"] == "standard"]
    assert slider["attack"] == "pgd"
    t = load_tensors(run_root / "standard" / "attacks" / "pgd-linf" / "adversarial.safetensors")
    eps = load_eps(run_root / "standard" / "attacks" / "pgd-linf")
    assert [f["eps"] for f in slider["frames"]] == [0.0, *eps]
    # frame 0 is the clean image, frame e+1 the attack at eps e: find which saved image each tile is
    tiles0 = [im["src"] for im in slider["frames"][0]["images"]]
    clean = [figures.data_uri(figures.tile_png(t["x"][i])) for i in range(len(t["y"]))]
    idx = [clean.index(src) for src in tiles0]
    for e in range(len(eps)):
        expected = [figures.data_uri(figures.tile_png(t["x_adv"][e][i])) for i in idx]
        assert [im["src"] for im in slider["frames"][e + 1]["images"]] == expected
        for i, im in zip(idx, slider["frames"][e + 1]["images"]):
            assert im["wrong"] == (int(t["logits"][e][i].argmax()) != int(t["y"][i]))


def load_eps(attack_dir):
    return [r["eps"] for r in json.loads((attack_dir / "result.json").read_text())["results"]]


def test_missing_sections_are_left_out(run_root, tmp_path):
    only = tmp_path / "only-a-model"
    only.mkdir()
    for name in ("card.json", "model.safetensors"):
        shutil.copy(run_root / "adversarial" / name, only / name)
    path, ctx = write_report(only)
    assert sections(ctx) == ["runs", "configs"]
    html = path.read_text()
    assert 'id="curves"' not in html and 'id="transfer"' not in html and "<img" not in html
    dist = tmp_path / "distances-only"
    shutil.copytree(run_root / "analysis" / "distances", dist / "analysis")
    ctx = collect(dist)
    assert sections(ctx) == ["distances"]


def test_nothing_to_report_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(ValueError, match="not a directory"):
        build_report(tmp_path / "missing")


def test_demo_summary_is_the_saved_numbers(run_root):
    record = json.loads((run_root / "demo-stdout.json").read_text())
    assert record == json.loads((run_root / "demo.json").read_text())
    assert (run_root / "report.html").is_file() and record["report"] == str(run_root / "report.html")
    s = record["summary"]
    cols = s["columns"]
    for row in s["rows"]:
        model = row[0]
        card = json.loads((run_root / model / "card.json").read_text())
        assert float(row[1]) == pytest.approx(card["metrics"]["test_accuracy"], abs=5e-4)
        ev = json.loads((run_root / model / "eval" / "fast-linf" / "result.json").read_text())
        assert row[-1] == ev["verdict"]
        budgets = [r["eps"] for r in ev["results"]]  # the table's budgets: the evaluation's
        assert budgets
        for r in ev["results"]:
            col = f"{ev['suite']} suite @ {r['eps']:g}"
            assert float(row[cols.index(col)]) == pytest.approx(r["robust_accuracy"], abs=5e-4), col
        for attack in ("fgsm", "pgd"):
            saved = json.loads((run_root / model / "attacks" / f"{attack}-linf" / "result.json").read_text())
            by_eps = {r["eps"]: r["robust_accuracy"] for r in saved["results"]}
            for e in budgets:
                col = f"{attack.upper()} @ {e:g}"
                assert col in cols and e in by_eps, (col, cols, sorted(by_eps))
                assert float(row[cols.index(col)]) == pytest.approx(by_eps[e], abs=5e-4), col
    assert json.loads((run_root / "standard" / "card.json").read_text())["defense"]["name"] == "none"
    assert json.loads((run_root / "adversarial" / "card.json").read_text())["defense"]["name"] == "pgd"
    t = json.loads((run_root / "transfer" / "transfer.json").read_text())
    assert t["names"] == ["standard", "adversarial"] and t["n"] == 40
    # the diagonal is each model's white-box FGSM error: the same attack, the same points as the attack step
    fgsm = json.loads((run_root / "standard" / "attacks" / "fgsm-linf" / "result.json").read_text())
    by_eps = {r["eps"]: 1 - r["robust_accuracy"] for r in fgsm["results"]}
    assert t["eps"] and set(t["eps"]) <= set(by_eps), (t["eps"], sorted(by_eps))
    for e, eps in enumerate(t["eps"]):
        assert t["error"]["standard"]["standard"][e] == pytest.approx(by_eps[eps], abs=1e-6)


def test_demo_rejects_a_dataset_without_images(capsys):
    assert main(["demo", "--dataset", "blobs"]) == 2
    assert main(["demo", "--epochs", "0", "--quick", "--out", "/nonexistent/x"]) == 2
    assert "--epochs" in capsys.readouterr().err
