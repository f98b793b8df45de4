"""benchmarks/gpu.py --small --device cpu: the GPU benchmark's code paths, end to end, on a CPU."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_fashion

ROOT = Path(__file__).resolve().parent.parent
# Under pytest-xdist each worker has one core's worth of threads (conftest.py); so does the benchmark.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"} if os.environ.get("PYTEST_XDIST_WORKER") else None


def table_rows(text: str) -> list[list[str]]:
    """Cells of the markdown table rows of the last section (header and separator left out)."""
    section = text.split("\n## ")[-1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return rows[1:]


def number(cell: str) -> float | None:
    m = re.match(r"^(-?\d+(?:\.\d+)?)", cell)
    return float(m.group(1)) if m else None


@needs_fashion
def test_small_run_appends_a_section_with_robust_accuracies_in_0_1(tmp_path):
    out = tmp_path / "gpu.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--small", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, timeout=180, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# GPU benchmark") and "H200" in text and "2026-12-04" in text  # the baseline header
    assert re.search(r"\n## \d{4}-\d\d-\d\d \d\d:\d\d \(--small smoke run\)", text)
    assert "Device: CPU" in text and "torch " in text
    assert "| setting | advlab | peer | advlab vs peer |" in text.split("\n## ")[-1]
    rows = table_rows(text)
    accuracy_rows = [row for row in rows if "accuracy" in row[0]]
    # clean, PGD at two batch sizes, the suite
    assert len(accuracy_rows) == 4, rows
    for setting, advlab, peer, _ in accuracy_rows:
        assert number(advlab) is not None and 0 <= number(advlab) <= 1, (setting, advlab)
        if peer not in ("-", "skipped"):
            assert 0 <= number(peer) <= 1, (setting, peer)
    # a peer that cannot be imported is skipped with a note saying why, not a crash
    if any(row[2] == "skipped" for row in rows):
        assert re.search(r"^- (PGD peer|AutoAttack) skipped: .*not importable", text.split("\n## ")[-1], re.M)

@needs_fashion
def test_second_run_appends_without_repeating_the_header(tmp_path):
    out = tmp_path / "gpu.md"
    out.write_text("# GPU benchmark (existing file)\n")
    script = ROOT / "benchmarks" / "gpu.py"
    sys.path.insert(0, str(script.parent))
    try:
        import gpu
    finally:
        sys.path.remove(str(script.parent))
    import argparse

    import torch
    args = argparse.Namespace(small=True)
    gpu.write_section(out, args, gpu.SMALL, torch.device("cpu"), [["PGD-20 robust accuracy", "0.5", "skipped", "-"]],
                      ["PGD peer skipped: test."], 1.0, 2.0)
    text = out.read_text()
    assert text.count("# GPU benchmark") == 1 and "Baseline" not in text
    assert "| PGD-20 robust accuracy | 0.5 | skipped | - |" in text and "- PGD peer skipped: test." in text


def test_no_gpu_and_auto_is_a_clean_skip_not_hours_on_the_cpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: auto would run the full benchmark")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "no GPU here" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cuda"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr


def _gpu_module():
    script = ROOT / "benchmarks" / "gpu.py"
    sys.path.insert(0, str(script.parent))
    try:
        import gpu
    finally:
        sys.path.remove(str(script.parent))
    return gpu


def test_search_settings_rows_compare_each_precision_and_graphs_with_fp32():
    """Step 4 on a tiny model: a robust-accuracy row and a seconds row per setting, beside advlab fp32."""
    import torch
    gpu = _gpu_module()
    assert gpu.search_settings(["fp32"], False) == []
    settings = gpu.search_settings(["fp32", "bf16"], True)
    assert settings == [("fp32", True), ("bf16", False), ("bf16", True)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(24, 1, 4, 4)
    y = model(x).argmax(1).detach()
    rows, notes = [], []
    gpu.bench_search(model, x, y, x, y, gpu.SMALL, torch.device("cpu"), settings, None, True, rows, notes)
    assert len(rows) == 2 * len(settings)
    for row in rows:
        assert row[2].endswith("(advlab fp32)")
    for setting, advlab, _, _ in rows[0::2]:
        assert "robust accuracy" in setting and 0 <= number(advlab) <= 1
    assert any("bf16 search, fp32-verified, CUDA graphs" in r[0] for r in rows)
    assert notes == ["--graphs without CUDA runs eagerly: its rows measure the eager path."]


def test_bad_precision_list_exits_2():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--small", "--device", "cpu",
                        "--precision", "fp32,fp8"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert r.returncode == 2 and "--precision takes fp32, bf16, fp16" in r.stderr
