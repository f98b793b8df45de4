"""A small but real run directory for the report tests: made by the CLI in a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from advlab.cli import main


@pytest.fixture(scope="session")
def report_run_dir(tmp_path_factory):
    """Shared by the report tests (made once per test process)."""
    return make_run(tmp_path_factory.mktemp("report"))


def make_run(root: Path) -> Path:
    """root/std (softmax on digits, attacked with FGSM and PGD, evaluated with checks), root/other (a second
    model), a transfer matrix between them and a class-distance analysis."""
    from advlab import load_run
    from advlab.attacks import FGSM
    from advlab.data import load_dataset
    from advlab.evaluate.transfer import transfer_matrix
    from advlab.io import write_json

    common = ["--no-progress"]
    for name, seed in (("std", "0"), ("other", "1")):
        assert main(["train", "--dataset", "digits", "--model", "softmax", "--epochs", "4", "--seed", seed,
                     "--out", str(root / name), *common]) == 0
    run = root / "std"
    # FGSM: numbers only (a curve); PGD: saved examples too (grids and the slider).
    assert main(["attack", "--run", str(run), "--attack", "fgsm", "--eps", "0.05,0.1,0.2", "--n", "24", *common]) == 0
    assert main(["attack", "--run", str(run), "--attack", "pgd", "--eps", "0.05,0.1,0.2", "--n", "24", "--steps", "5",
                 "--save", *common]) == 0
    assert main(["evaluate", "--run", str(run), "--eps", "0.05,0.1", "--suite", "fast", "--n", "40",
                 "--check-n", "24", *common]) == 0
    assert main(["analyze", "distances", "--dataset", "digits", "--per-class", "8", "--norms", "linf", "--n", "50",
                 "--out", str(root / "analysis"), *common]) == 0
    ds = load_dataset("digits")
    x, y = ds.test_subset(40)
    models = {"std": load_run(run)[0], "other": load_run(root / "other")[0]}
    m = transfer_matrix(models, x, y, [0.1], FGSM(), bounds=ds.bounds)
    write_json(root / "transfer" / "transfer.json", {**m.as_dict(), "attack": "fgsm", "n": len(y)})
    return root
