"""`advlab reproduce NAME`: published results beside ours, from the configs in experiments/.

    from advlab.reproduce import reproduce
    record = reproduce("blobs", "runs/reproduce", quick=True)
    record["rows"]     # quantity, ours, published, tolerance, verdict
    record["verdict"]  # "reproduced" | "partly reproduced (k of n match)" | "nothing compared"

Writes RUN/OUT/reproduce.json (OUT from the config) and RUN/OUT/report.html; `advlab report RUN`
shows every reproduction under RUN in one page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .config import Experiment, available, compare_rows, load_experiment, overall, safe_relative, verdict
from .protocols import PROTOCOLS, defaults

__all__ = ["Experiment", "PROTOCOLS", "available", "compare_rows", "defaults", "load_experiment", "overall",
           "reproduce", "safe_relative", "table", "verdict"]


def reproduce(name: str, run_dir: str | Path = "runs/reproduce", *, quick: bool = False, data_dir: str | None = None,
              progress: bool = True, log: Callable[[str], None] | None = None, report: bool = True,
              seed: int | None = None, overrides: dict[str, Any] | None = None, device=None) -> dict[str, Any]:
    """Run experiment NAME into RUN_DIR/OUT; `seed` replaces the config's seed, `overrides` any setting
    (checked like the config's own; the record lists them so a scaled run is labelled). `device`:
    where models train and run ("auto", "cpu", "cuda", "cuda:N", a torch.device; None: the CPU)."""
    from .. import rundir
    from ..device import describe, resolve_device
    from ..io import write_json

    if device is not None:
        device = resolve_device(device)  # a missing GPU fails here, before any work

    exp = load_experiment(name)
    settings = {**defaults(exp.experiment), **exp.resolved_settings(quick)}
    if seed is not None:
        settings["seed"] = seed
    if overrides:
        from .config import check_settings
        settings.update(check_settings(dict(overrides), defaults(exp.experiment), "`overrides`"))
    out = Path(run_dir) / exp.out
    log = log or (lambda m: None)
    log(f"{exp.title}" + (" (quick settings)" if quick else ""))
    started = time.perf_counter()
    measured, info = PROTOCOLS[exp.experiment][1](settings, out, data_dir=data_dir, log=log, progress=progress,
                                                  device=device)
    rows = compare_rows(exp.published, measured, info["dataset"])
    scale = info.get("scale", "")
    if quick:
        scale = "QUICK settings (a smoke test, not a reproduction)" + (f"; {scale}" if scale else "")
    if overrides:
        scale += ("; " if scale else "") + "overridden: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    record = {"name": exp.name, "experiment": exp.experiment, "title": exp.title, "reference": exp.reference,
              "dataset": info["dataset"], "note": " ".join(t for t in (exp.note, info.get("note", "")) if t),
              "scale": scale, "quick": quick, "overrides": overrides or {}, "settings": settings, "measured": measured, "rows": rows,
              "verdict": overall([r["verdict"] for r in rows]), "figures": info.get("figures", {}),
              "config": exp.source, "device": describe(device) if device is not None else "cpu",
              "seconds": time.perf_counter() - started}
    write_json(out / rundir.REPRODUCE_FILE, record)
    if report:
        from ..report.html import build_report
        record["report"] = str(build_report(out))
    return record


def table(record: dict[str, Any]) -> str:
    cols = ["quantity", "setting", "ours", "published", "tolerance", "verdict"]
    rows = [[r["quantity"], r["setting"], r["ours_text"], r["published_text"], r["tolerance_text"], r["verdict"]]
            for r in record["rows"]]
    widths = [min(44, max(len(c), *(len(str(r[i])) for r in rows))) if rows else len(c) for i, c in enumerate(cols)]

    def line(values):
        cells = []
        for i, (v, w) in enumerate(zip(values, widths)):
            v = str(v)
            v = v if len(v) <= w else v[:w - 1] + "…"
            cells.append(v.ljust(w) if i in (0, 1, 5) else v.rjust(w))
        return "  ".join(cells).rstrip()

    out = [f"{record['title']} - {record['dataset']}"]
    if record.get("note"):
        out.append(f"note: {record['note']}")
    if record.get("scale"):
        out.append(f"scale: {record['scale']}")
    out += ["", line(cols), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append("")
    out.append(f"verdict: {record['verdict']}  ({record['seconds']:.0f} s)")
    return "\n".join(out)
