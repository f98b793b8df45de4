"""benchmarks/panel.py --quick: the panel's small version on digits (issue 27).

Every masking defense is flagged by the gradient-masking checks, which point to the adaptation that sees
through it, and the adaptive attack breaks it (robust accuracy well below what naive PGD-20 reports); the
ordinary model is not flagged."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The subprocess imports this checkout's advlab (not whatever the interpreter has installed, e.g. another worktree).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
       **({"OMP_NUM_THREADS": "1"} if os.environ.get("PYTEST_XDIST_WORKER") else {})}


def test_quick_panel_flags_every_masking_defense_and_its_adaptive_attack_breaks_it(tmp_path):
    out, md = tmp_path / "panel.json", tmp_path / "panel.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "panel.py"), "--quick", "--json", str(out),
                        "--out", str(md)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {s["model"]: s for s in json.loads(out.read_text())}
    assert set(rows) == {"standard", "quantize", "threshold", "saturated", "random"}
    plain = rows.pop("standard")
    assert plain["verdict"] == "ok" and plain["recommend"] == [], plain
    for name, s in rows.items():
        assert s["verdict"] != "ok", (name, s)
        assert s["recommend"] == [s["adaptation"]], (name, s)
        # The adaptive attack does what the naive one could not: at least 10 points of 100 more broken.
        assert s["adaptive"] <= s["pgd20"] - 0.1, (name, s)
        assert s["clean"] >= 0.75, (name, s)  # the defenses classify: their robustness is what is at stake
    text = md.read_text()
    assert "--adaptive bpda" in text and "--adaptive rescale" in text and "--adaptive eot" in text
