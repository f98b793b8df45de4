"""Bounded memory: peak RSS of `advlab evaluate` on 1,000 versus 10,000 test images, and on 500 versus
5,000 ImageNet-size JPEGs of mixed sizes read on demand (`--preprocess res256crop224`).

    python benchmarks/memory.py            both tables
    python benchmarks/memory.py --images   only the image-folder one

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
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"advlab {' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    peak, end = (int(v) / 1024 for v in out.stdout.strip().splitlines()[-1].split())
    return peak, end


# ---------------------------------------------------------------- ImageNet-size images read on demand

IMAGES = 5000
MODEL = '''
from torch import nn


def build():
    """A small CNN for 224x224 RGB (the memory of interest is the data's, not the model's)."""
    return nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))
'''


def image_folder(n: int = IMAGES) -> Path:
    """CACHE/imagenet-size/CLASS/NNNN.jpg: n JPEGs of 10 classes, sizes 200..500 x 200..500 (made once)."""
    import numpy as np
    from PIL import Image

    root = CACHE / "imagenet-size"
    if (root / "complete").exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(200, 500, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.integers(0, 256, 3)
        img = (base + 60 * np.sin(xx[..., None] / rng.uniform(5, 40) + yy[..., None] / rng.uniform(5, 40))
               + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=85)
    (root / "complete").write_text("")
    return root


def images_table() -> str:
    folder = image_folder()
    (CACHE / "imagenet-size-model.py").write_text(MODEL)
    rows = []
    for n in (500, IMAGES):
        out = CACHE / f"memory-images-{n}"
        args = ["evaluate", "--model", f"{CACHE / 'imagenet-size-model.py'}:build", "--data", str(folder),
                "--classes", "10", "--preprocess", "res256crop224", "--chunk-size", "500", "--batch-size", "100",
                "--eps", "1/255,4/255",
                "--suite", "fast", "--n", str(n), "--no-checks", "--fresh", "--no-progress", "--out", str(out)]
        peak, end = measure(args)
        in_memory = n * 3 * 224 * 224 * 4 * (N_EPS + 1) / 2**20  # inputs + one adversarial copy per eps, float32
        on_disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        rows.append([n, peak, end, in_memory, on_disk])
    (n1, p1, *_), (n2, p2, *_) = rows
    return ("# Peak memory of advlab evaluate on ImageNet-size images read on demand\n\n"
            f"{IMAGES} JPEGs of sizes 200..500 x 200..500 read with `--preprocess res256crop224 --chunk-size 500 --batch-size 100` "
            "(DataLoader workers decode them), a small CNN, the fast suite at 2 epsilons.\n\n"
            + markdown_table(["images", "peak RSS (MB)", "RSS at the end (MB)",
                              "inputs and examples if held in memory (MB)", "written to disk (MB)"], rows)
            + f"\n\nFrom {n1} to {n2} images the peak grows by {p2 - p1:.0f} MB ({(p2 - p1) / p1:.1%}), while "
              f"holding the {n2} images and their adversarial copies would take {rows[1][3]:.0f} MB. The decoders "
              f"are forked worker processes (their resident pages are mostly the parent's, shared), not counted.\n")


def main() -> None:
    images = images_table()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory-images.md").write_text(images)
    print(images)
    if "--images" in sys.argv:
        return
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
