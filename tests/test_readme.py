"""The README's Python code runs as written: every ```python block, in order, in one namespace, in a
scratch directory (so `runs/...` paths land there)."""

import json
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_readme_has_python_examples():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    assert any("advlab.load_run" in b for b in blocks)


@pytest.mark.slow  # trains a small model and evaluates it: ~10 s, more on a busy machine
def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks(README.read_text())):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)
    out = capsys.readouterr().out
    assert "report.html" in out
    run = tmp_path / "runs" / "readme-mlp"
    assert (run / "report.html").is_file()
    ns = namespace
    data, model = ns["data"], ns["model"]
    # The printed test accuracy is what the run wrote, and what the model scores on the test set.
    written = json.loads((run / "card.json").read_text())["metrics"]["test_accuracy"]
    assert str(written) in out.splitlines() and ns["card"]["metrics"]["test_accuracy"] == written
    with torch.no_grad():
        assert written == pytest.approx((model(data.x_test).argmax(1) == data.y_test).float().mean().item(), abs=1e-6)
    assert written > 0.85  # an MLP, 5 epochs on digits: ~0.90
    # An undefended model: PGD at eps 0.1 costs it a lot, less at 0.05 (measured: 0.91 -> 0.81 -> 0.64).
    result = ns["result"]
    clean, (r05, r10) = result.clean_accuracy(), result.robust_accuracy()
    assert clean > 0.85 and clean - 0.15 > r10 and r10 <= r05 < clean, (clean, r05, r10)
    # The suite (APGD-CE + APGD-T) is no weaker than PGD-20 on the same points, inside its own interval.
    (acc,), ((lo, hi),) = ns["ev"].robust_accuracy(), ns["ev"].ci95()
    assert ns["ev"].clean_accuracy() == pytest.approx(clean) and lo <= acc <= hi and acc <= r10 + 0.02, (acc, r10)
    assert str(ns["ev"].robust_accuracy()) in out
    # IBP at radius 0 is the clean accuracy; a point certified at 0.05 is one PGD could not break.
    cert = ns["cert"]
    assert cert.curve()[0]["accuracy"] == pytest.approx(clean)
    certified = (cert.prediction == cert.label) & (cert.radius >= 0.05)
    assert not (certified & ~result.correct[0]).any() and cert.accuracy_at(0.05) <= r05
    smooth = ns["smooth"]
    assert ((smooth.prediction >= -1) & (smooth.prediction < 10)).all() and (smooth.radius >= 0).all()
    assert (smooth.radius[smooth.prediction == -1] == 0).all() and (smooth.radius > 0).any()
