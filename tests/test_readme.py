"""The README's Python code runs as written: every ```python block, in order, in one namespace, in a
scratch directory (so `runs/...` paths land there)."""

import re
from pathlib import Path

import pytest

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
    assert (tmp_path / "runs" / "readme-mlp" / "report.html").is_file()
    assert 0.0 <= namespace["result"].robust_accuracy()[1] <= namespace["result"].robust_accuracy()[0] <= 1.0
