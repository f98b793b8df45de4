"""Certify a Subject (a run or the user's own model, its data, a device) and record it in the run directory.

    from advlab.subject import open_subject
    from advlab.artifacts import certify_run
    record = certify_run(open_subject(run="runs/fmnist-ibp"), "ibp", eps=0.1, n=500)
    # -> runs/fmnist-ibp/certify/ibp-linf-eps0.1/result.json (the `advlab certify --json` object)
    record = certify_run(subject, "exact", eps=0.05, n=100, timeout=10)
    # -> RUN/certify/exact-linf-eps0.05/: result.json (each point with its status), counterexamples.safetensors

Used by `advlab certify` and `advlab reproduce` alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..certify.crown import certify_crown
from ..certify.exact import DEFAULT_TIMEOUT, verify_exact
from ..certify.ibp import certify_ibp
from ..certify.result import Certificate
from ..certify.smoothing import certify_smoothing, noise_hint
from ..data import rows
from ..errors import AdvlabError
from ..io import save_tensors, write_csv, write_json
from . import names

METHODS = ("smoothing", "ibp", "crown", "alpha-crown", "exact")
# The norms each method certifies (the first is its default).
METHOD_NORMS = {"smoothing": ("l2",), "ibp": ("linf",), "crown": ("linf", "l2"), "alpha-crown": ("linf", "l2"),
                "exact": ("linf",)}


def check_method(method: str, sigma: float | None, eps: float | None, norm: str | None = None,
                 timeout: float | None = None) -> str:
    """Each method's own parameters, and not another's; returns the norm (the method's default when None)."""
    if method not in METHODS:
        raise AdvlabError(f"unknown certification method {method!r}; choose one of {', '.join(METHODS)}")
    norm = norm or METHOD_NORMS[method][0]
    if method == "smoothing":
        if sigma is None:
            raise AdvlabError("`method='smoothing'` needs `sigma` (the noise level, raw input units, e.g. 0.25)")
        if eps is not None:
            raise AdvlabError("`eps` belongs to `method='ibp'` (or crown, alpha-crown, exact); randomized smoothing "
                              "certifies L2 radii from `sigma`")
    else:
        if eps is None:
            raise AdvlabError(f"`method='{method}'` needs `eps` (the budget, raw input units, e.g. 0.1 or 8/255)")
        if sigma is not None:
            raise AdvlabError(f"`sigma` belongs to `method='smoothing'`; {method} certifies the ball of `eps`")
    if norm not in METHOD_NORMS[method]:
        raise AdvlabError(f"`method='{method}'` certifies `norm='{METHOD_NORMS[method][0]}'`"
                          f"{' or ' + repr(METHOD_NORMS[method][1]) if len(METHOD_NORMS[method]) > 1 else ''}, "
                          f"not `norm='{norm}'`" + ("; crown and alpha-crown bound l2 balls" if method in
                                                    ("ibp", "exact") and norm == "l2" else ""))
    if timeout is not None and method != "exact":
        raise AdvlabError("`timeout` belongs to `method='exact'` (seconds per point before it says unknown)")
    return norm


def certify_run(subject, method: str, *, sigma: float | None = None, eps: float | None = None, n: int | None = None,
                samples: int = 10000, samples0: int = 100, alpha: float = 0.001, batch_size: int | None = None,
                radii: list[float] | None = None, seed: int = 0, out: str | Path | None = None,
                fresh: bool = False, progress: bool = True, norm: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
    """Run `method` on the first `n` test points of the subject's data; write OUT/result.json, curve.csv
    and points.csv (OUT default: RUN/certify/METHOD-NORM-PARAM) and return the record. `exact` also writes
    OUT/counterexamples.safetensors; it and smoothing resume from OUT/state.safetensors (`fresh`: start over)."""
    started = time.perf_counter()
    norm = check_method(method, sigma, eps, norm, timeout)
    data = subject.data
    x, y = data.test_subset(n)
    x = rows(x, progress)  # images read on demand are decoded now
    out = Path(out) if out is not None else names.certify_dir(subject.run_dir, method, sigma, eps, norm)
    state = out / names.STATE_FILE
    if fresh and state.exists():
        state.unlink()
    if method == "smoothing":
        cert = certify_smoothing(subject.model, x, y, sigma, n0=samples0, n=samples, alpha=alpha,
                                 batch_size=batch_size or 1000, seed=seed, state_dir=out, progress=progress,
                                 identity=subject.identity())
    elif method == "ibp":
        cert = certify_ibp(subject.model, x, y, eps, bounds=data.bounds, batch_size=batch_size or 256,
                           progress=progress)
    elif method == "exact":
        cert = verify_exact(subject.model, x, y, eps, bounds=data.bounds, timeout=timeout or DEFAULT_TIMEOUT,
                            batch_size=batch_size or 32, seed=seed, state_dir=out, identity=subject.identity(),
                            progress=progress)
    else:
        cert = certify_crown(subject.model, x, y, eps, norm=norm, bounds=data.bounds, method=method,
                             batch_size=batch_size or 64, progress=progress)
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
    if method == "exact":
        record["robust_accuracy_exact"] = record["certified_accuracy"][-1]["accuracy"] if not record["unknown"] \
            else None
        _write_counterexamples(out, cert, x, subject.model)
        record["counterexamples"] = names.COUNTEREXAMPLES_FILE
    write_json(out / names.RESULT_FILE, record)
    _write_csvs(out, record, cert)
    return record


def _write_counterexamples(out: Path, cert: Certificate, x: torch.Tensor, model) -> None:
    """index, x, x_adv (fp32, inside the ball and the bounds), y and the model's logits on x_adv."""
    from ..predict import model_device
    keys = [i for i in cert.index.tolist() if i in cert.counterexamples]
    if not keys:
        (out / names.COUNTEREXAMPLES_FILE).unlink(missing_ok=True)
        return
    row = {int(i): p for p, i in enumerate(cert.index.tolist())}
    x_adv = torch.stack([cert.counterexamples[i].float() for i in keys])
    with torch.no_grad():
        logits = model(x_adv.to(model_device(model))).float().cpu()
    save_tensors(out / names.COUNTEREXAMPLES_FILE,
                 {"index": torch.tensor(keys, dtype=torch.long), "x": torch.stack([x[row[i]].float() for i in keys]),
                  "x_adv": x_adv, "y": cert.label[[row[i] for i in keys]], "logits": logits})


def _clean_accuracy(model, x, y) -> float:
    from ..predict import accuracy
    return accuracy(model, x, y)


def _write_csvs(out: Path, record: dict[str, Any], cert: Certificate) -> None:
    write_csv(out / names.CURVE_CSV, ["radius", "certified_accuracy", "ci95_low", "ci95_high"],
              [[r["radius"], r["accuracy"], *r["ci95"]] for r in record["certified_accuracy"]])
    extra = sorted(cert.extra)
    status = ["status"] if cert.status is not None else []
    write_csv(out / names.POINTS_CSV, ["index", "label", "prediction", "radius", *status, *extra],
              [[p["index"], p["label"], p["prediction"], p["radius"], *([p["status"]] if status else []),
                *(cert.extra[k][i].item() for k in extra)] for i, p in enumerate(record["points"])])
