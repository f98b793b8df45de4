"""A small but real demo directory for the report, browser and demo tests: `advlab demo --quick` with a
softmax model (two runs, attacks with saved examples, evaluations with checks, transfer, distances)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from advlab.cli import main


_MADE: dict[str, Path] = {}


def make_run(root: Path) -> Path:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", "--quick", "--model", "softmax", "--epochs", "4", "--out", str(root), "--no-progress",
                     "--json"]) == 0
    (root / "demo-stdout.json").write_text(buf.getvalue())
    json.loads(buf.getvalue())
    return root


@pytest.fixture(scope="session")
def report_run_dir(tmp_path_factory):
    """Shared by the report tests (made once per test process, whichever module asks first)."""
    if "demo" not in _MADE:
        _MADE["demo"] = make_run(tmp_path_factory.mktemp("demo"))
    return _MADE["demo"]
