"""Certify a Subject (a run or the user's own model, its data, a device) and record it in the run directory.

    from advlab.subject import open_subject
    from advlab.certify.run import certify_subject
    record = certify_subject(open_subject(run="runs/fmnist-ibp"), "ibp", eps=0.1, n=500)
    # -> runs/fmnist-ibp/certify/ibp-linf-eps0.1/result.json (the `advlab certify --json` object)

Used by `advlab certify`, the demo and `advlab reproduce` alike.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from ..errors import AdvlabError
from ..io import atomic_write, write_json
from .ibp import certify_ibp
from .result import Certificate
from .smoothing import certify_smoothing

METHODS = ("smoothing", "ibp")


def result_dir_name(method: str, sigma: float | None = None, eps: float | None = None) -> str:
    return f"smoothing-l2-sigma{sigma:g}" if method == "smoothing" else f"ibp-linf-eps{eps:g}"


def certify_subject(subject, method: str, *, sigma: float | None = None, eps: float | None = None, n: int | None = None,
                    samples: int = 10000, samples0: int = 100, alpha: float = 0.001, batch_size: int | None = None,
                    radii: list[float] | None = None, seed: int = 0, out: str | Path | None = None,
                    fresh: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run `method` on the first `n` test points of the subject's data; write OUT/result.json, curve.csv
    and points.csv (OUT default: RUN/certify/METHOD-NORM-PARAM) and return the record."""
    started = time.perf_counter()
    if method not in METHODS:
        raise AdvlabError(f"unknown certification method {method!r}; choose one of {', '.join(METHODS)}")
    data = subject.data
    x, y = data.test_subset(n)
    out = Path(out) if out is not None else subject.run_dir / "certify" / result_dir_name(method, sigma, eps)
    if method == "smoothing":
        if sigma is None:
            raise AdvlabError("--method smoothing needs --sigma (the noise level, in raw input units, e.g. 0.25)")
        state = out / "state.safetensors"
        if fresh and state.exists():
            state.unlink()
        cert = certify_smoothing(subject.model, x, y, sigma, n0=samples0, n=samples, alpha=alpha,
                                 batch_size=batch_size or 1000, seed=seed, state_dir=out, progress=progress,
                                 identity=subject.identity())
    else:
        if eps is None:
            raise AdvlabError("--method ibp needs --eps (the Linf budget in raw input units, e.g. 0.1 or 8/255)")
        cert = certify_ibp(subject.model, x, y, eps, bounds=data.bounds, batch_size=batch_size or 256,
                           progress=progress)
    record = cert.record(radii)
    record.update(clean_accuracy=_clean_accuracy(subject.model, x, y), dataset=data.name, seed=seed,
                  seconds=time.perf_counter() - started, **subject.record())
    record["certify_seconds"] = cert.seconds
    record["certifies"] = ("the smoothed classifier g (majority vote of the model under Gaussian noise), "
                           "not the model itself" if method == "smoothing" else "the model itself")
    write_json(out / "result.json", record)
    _write_csvs(out, record, cert)
    return record


def _clean_accuracy(model, x, y) -> float:
    from ..predict import accuracy
    return accuracy(model, x, y)


def _write_csvs(out: Path, record: dict[str, Any], cert: Certificate) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["radius", "certified_accuracy", "ci95_low", "ci95_high"])
    for r in record["certified_accuracy"]:
        w.writerow([r["radius"], r["accuracy"], *r["ci95"]])
    atomic_write(out / "curve.csv", buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = sorted(cert.extra)
    w.writerow(["index", "label", "prediction", "radius", *extra])
    for i, p in enumerate(record["points"]):
        w.writerow([p["index"], p["label"], p["prediction"], p["radius"], *(cert.extra[k][i].item() for k in extra)])
    atomic_write(out / "points.csv", buf.getvalue().encode())


def text(record: dict[str, Any], out: Path | None = None) -> str:
    """What `advlab certify` prints without --json."""
    if record["method"] == "smoothing":
        head = (f"randomized smoothing, sigma {record['sigma']:g} (L2), n0 {record['samples0']}, "
                f"n {record['samples']}, alpha {record['alpha']:g}: {record['n']} points, "
                f"{record['abstained']} abstained, {record['seconds']:.1f} s "
                f"({record['seconds_per_point']:.2f} s per point)")
    else:
        head = (f"interval bound propagation, Linf eps {record['eps']:g}: {record['n']} points, "
                f"{record['seconds']:.1f} s")
    lines = [head, f"clean accuracy (the model) {record['clean_accuracy']:.4f}; certifies {record['certifies']}",
             f"{'radius':>8}  {'certified acc':>13}  {'95% interval':>17}"]
    for r in record["certified_accuracy"]:
        lo, hi = r["ci95"]
        lines.append(f"{r['radius']:>8.4g}  {r['accuracy']:>13.4f}  [{lo:.4f}, {hi:.4f}]")
    if out is not None:
        lines.append(f"results in {out}")
    return "\n".join(lines)
