"""Bounded memory: peak RSS of `advlab evaluate` on 1,000 versus 10,000 test images.

    python benchmarks/memory.py

Evaluation streams the attacks over batches; what grows with the number of images is only the
results (adversarial examples and logits per epsilon). The table shows the peak resident memory
of each run (a fresh process, getrusage of the child) beside the size of the result tensors it
must hold (the test inputs, one adversarial copy per epsilon, logits) and of what it wrote to
disk, and the growth that neither explains.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, RESULTS, markdown_table, trained_model  # noqa: E402


N_EPS = 2


def peak_rss_mb(args: list[str]) -> float:
    """Run the command in a fresh child process and return its peak RSS in MB."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    trained_model("fm-cnn-standard", epochs=2)
    run = CACHE / "fm-cnn-standard"
    rows = []
    for n in (1000, 10000):
        out = CACHE / f"memory-eval-{n}"
        args = [sys.executable, "-m", "advlab", "evaluate", "--run", str(run), "--eps", "0.05,0.1", "--suite", "fast",
                "--n", str(n), "--no-checks", "--fresh", "--no-progress", "--out", str(out)]
        peak = peak_rss_mb(args)
        on_disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        held = n * (N_EPS + 1) * (28 * 28 + 10) * 4 / 2**20  # inputs + adversarial copies + logits, float32
        rows.append([n, peak, held, on_disk])
    (n1, p1, h1, _), (n2, p2, h2, _) = rows
    growth = p2 - p1
    text = ("# Peak memory of advlab evaluate (fast suite, 2 epsilons, Fashion-MNIST)\n\n"
            + markdown_table(["images", "peak RSS (MB)", "result tensors held (MB)", "written to disk (MB)"], rows)
            + f"\n\nFrom {n1} to {n2} images the peak grows by {growth:.0f} MB; the result tensors held in "
              f"memory grow by {h2 - h1:.0f} MB, so {growth - (h2 - h1):.0f} MB of the growth is not explained "
              f"by them.\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
