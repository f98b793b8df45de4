"""Bounded memory: peak RSS of `advlab evaluate` on 1,000 versus 10,000 test images.

    python benchmarks/memory.py

Evaluation streams the attacks over batches; what grows with the number of images is only the
results (adversarial examples and logits per epsilon). The table shows the peak resident memory
of each run (a fresh process, getrusage of the child) beside the size of the result tensors it
must hold (the test inputs, one adversarial copy per epsilon, logits) and of what it wrote to
disk, and the growth that neither explains.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, RESULTS, markdown_table, trained_model  # noqa: E402


N_EPS = 2


def measure(argv: list[str]) -> tuple[float, float]:
    """Run `advlab ARGV` in a fresh process: (peak RSS, RSS when it finished), in MB."""
    code = ("import resource, sys; from advlab.cli import main; rc = main(sys.argv[1:]); "
            "rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')][0]; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rss); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    peak, end = (int(v) / 1024 for v in out.stdout.strip().splitlines()[-1].split())
    return peak, end


def main() -> None:
    trained_model("fm-cnn-standard", epochs=2)
    run = CACHE / "fm-cnn-standard"
    rows = []
    for n in (1000, 10000):
        out = CACHE / f"memory-eval-{n}"
        args = ["evaluate", "--run", str(run), "--eps", "0.05,0.1", "--suite", "fast",
                "--n", str(n), "--no-checks", "--fresh", "--no-progress", "--out", str(out)]
        peak, end = measure(args)
        on_disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        held = n * (N_EPS + 1) * (28 * 28 + 10) * 4 / 2**20  # inputs + adversarial copies + logits, float32
        rows.append([n, peak, end, held, on_disk])
    (n1, p1, e1, h1, _), (n2, p2, e2, h2, _) = rows
    growth = p2 - p1
    text = ("# Peak memory of advlab evaluate (fast suite, 2 epsilons, Fashion-MNIST)\n\n"
            + markdown_table(["images", "peak RSS (MB)", "RSS at the end (MB)", "result tensors held (MB)",
                             "written to disk (MB)"], rows)
            + f"\n\nFrom {n1} to {n2} images the peak grows by {growth:.0f} MB; the result tensors held in "
              f"memory grow by {h2 - h1:.0f} MB, so {growth - (h2 - h1):.0f} MB of the growth is not explained "
              f"by them. At the end of the run (everything computed, results written) resident memory grows "
              f"by {e2 - e1:.0f} MB.\n")
    notes = RESULTS / "memory-notes.md"  # hand-written: what was tried, appended to every report
    if notes.exists():
        text += "\n" + notes.read_text()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
