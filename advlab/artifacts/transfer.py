"""The transfer matrix between models, recorded: DIR/transfer.json, and each model's examples in the other runs.

    from advlab.artifacts import transfer_run
    from advlab.attacks import FGSM
    record = transfer_run({"standard": a, "adversarial": b}, x, y, [0.1], FGSM("linf"), out="runs/demo/transfer",
                          dataset="digits", bounds=(0, 1), runs={"standard": "runs/demo/standard", ...})
    record["error"]["standard"]["adversarial"]   # per eps: error of `adversarial` on examples crafted on `standard`

With `runs` (name -> run directory), the examples crafted on each model are saved, scored, in every other
model's run (RUN/transfer/ATTACK-from-SOURCE-NORM/), where later evaluations count them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..evaluate.recorded import save_transfer
from ..evaluate.transfer import transfer_matrix
from ..io import write_json
from ..threat import Bounds
from .. import rundir


def transfer_run(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], attack, *,
                 out: str | os.PathLike, dataset: str, bounds: Bounds = None,
                 runs: dict[str, str | os.PathLike] | None = None, progress: bool = False) -> dict[str, Any]:
    """Craft with `attack` on every model, score on every model; write OUT/transfer.json and return its record."""
    norm = getattr(getattr(attack, "norm", None), "name", "linf")
    m = transfer_matrix(models, x, y, list(eps), attack, bounds=bounds, progress=progress)
    for source, result in m.results.items() if runs else ():
        for target, run in runs.items():
            if target != source:
                save_transfer(run, source, x, result.scores[target], norm)
    record = {**m.as_dict(), "attack": attack.name, "norm": norm, "n": len(y), "dataset": dataset}
    write_json(Path(out) / rundir.TRANSFER_FILE, record)
    return record
