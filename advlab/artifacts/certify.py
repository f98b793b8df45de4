"""Certify a Subject (a run or the user's own model, its data, a device) and record it in the run directory.

    from advlab.subject import open_subject
    from advlab.artifacts import certify_run
    record = certify_run(open_subject(run="runs/fmnist-ibp"), "ibp", eps=0.1, n=500)
    # -> runs/fmnist-ibp/certify/ibp-linf-eps0.1/result.json (the `advlab certify --json` object)

Used by `advlab certify` and `advlab reproduce` alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..certify.ibp import certify_ibp
from ..certify.result import Certificate
from ..certify.smoothing import certify_smoothing, noise_hint
from ..data import rows
from ..errors import AdvlabError
from ..io import write_csv, write_json
from . import names

METHODS = ("smoothing", "ibp")


def check_method(method: str, sigma: float | None, eps: float | None) -> None:
    """Each method's own parameter, and not the other's."""
    if method not in METHODS:
        raise AdvlabError(f"unknown certification method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "smoothing":
        if sigma is None:
            raise AdvlabError("`method='smoothing'` needs `sigma` (the noise level, raw input units, e.g. 0.25)")
        if eps is not None:
            raise AdvlabError("`eps` belongs to `method='ibp'`; randomized smoothing certifies L2 radii from `sigma`")
    else:
        if eps is None:
            raise AdvlabError("`method='ibp'` needs `eps` (the Linf budget, raw input units, e.g. 0.1 or 8/255)")
        if sigma is not None:
            raise AdvlabError("`sigma` belongs to `method='smoothing'`; IBP certifies the Linf ball of `eps`")


def certify_run(subject, method: str, *, sigma: float | None = None, eps: float | None = None, n: int | None = None,
                samples: int = 10000, samples0: int = 100, alpha: float = 0.001, batch_size: int | None = None,
                radii: list[float] | None = None, seed: int = 0, out: str | Path | None = None,
                fresh: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run `method` on the first `n` test points of the subject's data; write OUT/result.json, curve.csv
    and points.csv (OUT default: RUN/certify/METHOD-NORM-PARAM) and return the record."""
    started = time.perf_counter()
    check_method(method, sigma, eps)
    data = subject.data
    x, y = data.test_subset(n)
    x = rows(x, progress)  # images read on demand are decoded now
    out = Path(out) if out is not None else names.certify_dir(subject.run_dir, method, sigma, eps)
    if method == "smoothing":
        state = out / names.STATE_FILE
        if fresh and state.exists():
            state.unlink()
        cert = certify_smoothing(subject.model, x, y, sigma, n0=samples0, n=samples, alpha=alpha,
                                 batch_size=batch_size or 1000, seed=seed, state_dir=out, progress=progress,
                                 identity=subject.identity())
    else:
        cert = certify_ibp(subject.model, x, y, eps, bounds=data.bounds, batch_size=batch_size or 256,
                           progress=progress)
    record = cert.record(radii)
    record.update(clean_accuracy=_clean_accuracy(subject.model, x, y), dataset=data.name, seed=seed,
                  seconds=time.perf_counter() - started, **subject.record())
    record["certify_seconds"] = cert.seconds
    record["certifies"] = ("the smoothed classifier g (majority vote of the model under Gaussian noise), "
                           "not the model itself" if method == "smoothing" else "the model itself")
    if method == "smoothing":
        hint = noise_hint(sigma, cert.n, cert.abstained(), float(cert.certified(0.0).float().mean()) if cert.n else 0.0,
                          record["clean_accuracy"], subject.card)
        if hint:
            record["hint"] = hint
    write_json(out / names.RESULT_FILE, record)
    _write_csvs(out, record, cert)
    return record


def _clean_accuracy(model, x, y) -> float:
    from ..predict import accuracy
    return accuracy(model, x, y)


def _write_csvs(out: Path, record: dict[str, Any], cert: Certificate) -> None:
    write_csv(out / names.CURVE_CSV, ["radius", "certified_accuracy", "ci95_low", "ci95_high"],
              [[r["radius"], r["accuracy"], *r["ci95"]] for r in record["certified_accuracy"]])
    extra = sorted(cert.extra)
    write_csv(out / names.POINTS_CSV, ["index", "label", "prediction", "radius", *extra],
              [[p["index"], p["label"], p["prediction"], p["radius"], *(cert.extra[k][i].item() for k in extra)]
               for i, p in enumerate(record["points"])])
