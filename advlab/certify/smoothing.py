"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): a certified L2 radius from forward passes alone.

    from advlab.certify import certify_smoothing, predict_smoothing
    cert = certify_smoothing(model, x, y, sigma=0.25, n0=100, n=10000, alpha=0.001)
    cert.prediction, cert.radius          # per point; prediction -1 = abstain, radius 0 = not certified
    cert.curve([0.25, 0.5, 1.0])          # certified accuracy at each L2 radius

The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I), is what is certified:
CERTIFY guesses the top class cA from n0 noisy copies, counts how often it wins among n fresh ones,
takes the one-sided Clopper-Pearson lower bound pA of that probability at level 1 - alpha, and
certifies radius sigma * Phi^-1(pA) when pA > 1/2 (else it abstains). With probability at least
1 - alpha per point, g answers cA everywhere in that L2 ball. PREDICT returns g's answer, or abstains
when a binomial test cannot tell the top two classes apart at level alpha.

Noise is not clipped to the data's bounds (as in the paper; train with `--defense gaussian` alike).
Every point draws its noise from its own generator, keyed by (seed, test index, stage), so a point's
result does not depend on which other points run with it, and a resumed run (state saved after every
group of points, `state_dir`) ends with the same numbers as one that never stopped. Noise is drawn on
the model's device; rows of several points are packed into one batch of `batch_size`, and a CUDA
out-of-memory halves the forward chunk (the noise stays the same).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import binomtest, norm
from torch import nn

from .. import rng
from ..errors import AdvlabError
from ..evaluate.stats import clopper_pearson
from ..oom import fitting
from ..predict import model_device
from ..progress import progress as progress_bar
from ..progress import write
from ..rundir import STATE_FILE
from .result import ABSTAIN, Certificate
from .state import PointState

STAGE_SELECT, STAGE_ESTIMATE, STAGE_PREDICT = 0, 1, 2


def check_smoothing_options(sigma: float, n0: int, n: int, alpha: float, batch_size: int) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise AdvlabError(f"sigma must be a positive finite number, got {sigma!r}")
    for name, value in (("samples0 (n0)", n0), ("samples (n)", n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AdvlabError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise AdvlabError(f"alpha must be a probability in (0, 1), got {alpha!r}")


def lower_confidence_bound(successes: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound at level 1 - alpha (Cohen et al.'s LowerConfBound)."""
    return clopper_pearson(successes, n, 1 - 2 * alpha)[0]


def radius_from_p(p_lower: float, sigma: float) -> float:
    return sigma * float(norm.ppf(p_lower)) if p_lower >= 0.5 else 0.0


# When randomized smoothing says little: most points abstain, or the smoothed classifier is right on fewer than
# half as many points as the model itself. The usual cause is a base model never trained under that noise.
ABSTAIN_SHARE, FAR_BELOW = 0.5, 0.5


def noise_hint(sigma: float, n: int, abstained: int, smoothed_accuracy: float, clean_accuracy: float | None,
               card: dict[str, Any] | None = None) -> str | None:
    """Why a smoothing certificate says little, and what to do, or None when it does not.

    `smoothed_accuracy`: the share of points the smoothed classifier certifies correctly at radius 0;
    `card`: the run's card, whose defense says how the model was trained (None or an external model: unknown)."""
    if n <= 0:
        return None
    many = abstained > ABSTAIN_SHARE * n
    far = clean_accuracy is not None and smoothed_accuracy < FAR_BELOW * clean_accuracy
    if not (many or far):
        return None
    what = (f"{abstained} of {n} points abstained" if many else
            f"the smoothed classifier is right on {smoothed_accuracy:.1%} of the points, the model on "
            f"{clean_accuracy:.1%}")
    card = card or {}
    defense = card.get("defense") or {}
    name = defense.get("name")
    train = _noise_training(card, sigma)
    if name == "gaussian":
        trained = (defense.get("resolved") or {}).get("sigma", defense.get("sigma"))
        if trained is not None and not math.isclose(float(trained), sigma, rel_tol=1e-6):
            return (f"{what}: the model was trained with Gaussian noise of sigma {float(trained):g}, not {sigma:g}; "
                    f"certify at the sigma it was trained for (--sigma {float(trained):g}) or train one for this "
                    f"sigma: {train}")
        return (f"{what}, although the model was trained with Gaussian noise of this sigma: it may need more "
                "training, or a smaller sigma")
    if name in (None, "unknown") or card.get("kind") == "external":
        return (f"{what}: the model was likely not trained with Gaussian noise of sigma {sigma:g}, and randomized "
                "smoothing needs a base model that classifies inputs under that noise; train it with Gaussian "
                f"noise augmentation of that sigma (in advlab: {train})")
    return (f"{what}: the model was trained with the defense {name!r}, not with Gaussian noise of sigma {sigma:g}, "
            f"which randomized smoothing needs of its base model; train one with {train}")


def _noise_training(card: dict[str, Any], sigma: float) -> str:
    """The `advlab train` command for a model like the card's, trained under Gaussian noise of `sigma`."""
    model, dataset = card.get("model") or {}, card.get("dataset") or {}
    known = card.get("kind") != "external" and model.get("name") and dataset.get("name")
    args = f"--dataset {dataset['name']} --model {model['name']}" if known else "--dataset D --model M"
    return f"advlab train {args} --defense gaussian --defense-arg sigma={sigma:g} --out RUN"


class _Sampler:
    """Counts of f's answers on noisy copies of points; rows of several points share a batch."""

    def __init__(self, model: nn.Module, sigma: float, batch_size: int, device: torch.device):
        self.model, self.sigma, self.batch_size, self.device = model, sigma, batch_size, device
        self.chunk = batch_size        # forward chunk; halves on a CUDA out-of-memory
        self.num_classes: int | None = None
        self.rows = 0                  # forward passes (image rows)

    def counts(self, x: torch.Tensor, n: int, generators: list[torch.Generator]) -> torch.Tensor:
        """(P, K) int64: for each of the P points in x, how often each class won among n noisy copies."""
        pieces: list[tuple[int, int]] = []
        for p in range(len(x)):
            left = n
            while left > 0:
                m = min(left, self.batch_size)
                pieces.append((p, m))
                left -= m
        counts = None
        group: list[tuple[int, int]] = []
        rows = 0
        for p, m in pieces + [(-1, 0)]:
            if group and (p < 0 or rows + m > self.batch_size):
                counts = self._run(x, group, generators, counts)
                group, rows = [], 0
            if p >= 0:
                group.append((p, m))
                rows += m
        return counts.cpu()

    def _run(self, x: torch.Tensor, group: list[tuple[int, int]], generators, counts):
        shape = x.shape[1:]
        batch = torch.cat([x[p].unsqueeze(0) + self.sigma * torch.randn((m, *shape), generator=generators[p],
                                                                         device=self.device, dtype=x.dtype)
                           for p, m in group])                          # (rows, ...)
        owner = torch.cat([torch.full((m,), p, dtype=torch.long, device=self.device) for p, m in group])
        preds = self._predict(batch)                                    # (rows,)
        if counts is None:
            counts = torch.zeros(len(x), self.num_classes, dtype=torch.long, device=self.device)
        counts.index_put_((owner, preds), torch.ones_like(preds), accumulate=True)
        self.rows += len(batch)
        return counts

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        out, i = [], 0
        while i < len(batch):
            logits, self.chunk = fitting(lambda size: self.model(batch[i:i + size]), self.chunk,
                                         "randomized smoothing", write)
            if logits.ndim != 2:
                raise AdvlabError(f"the model must return logits of shape (N, K), got {tuple(logits.shape)}")
            self.num_classes = self.num_classes or logits.shape[1]
            out.append(logits.argmax(1))
            i += self.chunk
        return torch.cat(out)


def _generators(seed: int, index: torch.Tensor, stage: int, device: torch.device) -> list[torch.Generator]:
    return [rng.generator(seed, int(i), stage, device=device) for i in index.tolist()]


@torch.no_grad()
def certify_smoothing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, *, n0: int = 100,
                      n: int = 10000, alpha: float = 0.001, batch_size: int = 1000, seed: int = 0,
                      state_dir: str | Path | None = None, progress: bool = True,
                      identity: dict[str, Any] | None = None, indices: torch.Tensor | None = None) -> Certificate:
    """CERTIFY (Cohen et al. 2019, Algorithm 1 right) for every point of x; see the module docstring.

    `indices`: each point's index in the test set (default 0..N-1); it keys the point's noise and its
    saved result, so `--n 500` after `--n 100` reuses the first 100 points."""
    check_smoothing_options(sigma, n0, n, alpha, batch_size)
    y = y.long().cpu()
    index = torch.arange(len(y)) if indices is None else indices.long().cpu()
    device = model_device(model)
    settings = {"method": "smoothing", "sigma": float(sigma), "n0": n0, "n": n, "alpha": float(alpha), "seed": seed,
                "batch_size": batch_size, **(identity or {})}
    state = _state(Path(state_dir) / STATE_FILE if state_dir is not None else None, settings)
    todo = [i for i in range(len(y)) if int(index[i]) not in state.done]
    sampler = _Sampler(model, float(sigma), batch_size, device)
    group = max(1, min(64, batch_size // n0))  # points per state save (their n0 rows fill one batch)
    was_training = model.training
    model.eval()
    started = time.perf_counter() - state.seconds
    bar = progress_bar(range(len(y)), f"smoothing sigma {sigma:g}", progress, unit="point", initial=len(y) - len(todo))
    try:
        for g in range(0, len(todo), group):
            rows = todo[g:g + group]
            xs = x[rows].to(device)
            idx = index[rows]
            counts0 = sampler.counts(xs, n0, _generators(seed, idx, STAGE_SELECT, device))   # (P, K)
            top = counts0.argmax(1)
            counts = sampler.counts(xs, n, _generators(seed, idx, STAGE_ESTIMATE, device))   # (P, K)
            n_top = counts.gather(1, top.view(-1, 1)).flatten()
            for j, i in enumerate(idx.tolist()):
                p_lower = lower_confidence_bound(int(n_top[j]), n, alpha)
                pred = int(top[j]) if p_lower >= 0.5 else ABSTAIN
                state.done[i] = (pred, radius_from_p(p_lower, sigma), p_lower, int(n_top[j]))
            state.seconds = time.perf_counter() - started
            state.meta["rows"] += sampler.rows
            sampler.rows = 0
            state.save()
            bar.update(len(rows))
    except KeyboardInterrupt:
        if state.path is not None:
            write(f"interrupted: certification state saved in {state.path.parent}; run the same command again "
                  "to resume")
        raise
    finally:
        bar.close()
        model.train(was_training)
    rows = [state.done[int(i)] for i in index]
    pred = torch.tensor([r[0] for r in rows], dtype=torch.long)
    radius = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    params = {"sigma": float(sigma), "norm": "l2", "samples": n, "samples0": n0, "alpha": float(alpha),
              "forward_rows": state.meta["rows"]}
    if sampler.chunk < batch_size:
        params["batch_size_after_oom"] = sampler.chunk
    extra = {"p_lower": torch.tensor([r[2] for r in rows], dtype=torch.float64),
             "count_top": torch.tensor([r[3] for r in rows], dtype=torch.long)}
    return Certificate("smoothing", params, index, y, pred, radius, time.perf_counter() - started, extra)


@torch.no_grad()
def predict_smoothing(model: nn.Module, x: torch.Tensor, sigma: float, *, n: int = 1000, alpha: float = 0.001,
                      batch_size: int = 1000, seed: int = 0, indices: torch.Tensor | None = None) -> torch.Tensor:
    """PREDICT (Cohen et al. 2019, Algorithm 1 left): g's class per point, or -1 (abstain) when a two-sided
    binomial test of the top two counts is not significant at level alpha. Returns (N,) int64."""
    check_smoothing_options(sigma, 1, n, alpha, batch_size)
    index = torch.arange(len(x)) if indices is None else indices.long().cpu()
    device = model_device(model)
    sampler = _Sampler(model, float(sigma), batch_size, device)
    was_training = model.training
    model.eval()
    out = []
    try:
        group = max(1, min(64, batch_size // n))
        for g in range(0, len(x), group):
            xs = x[g:g + group].to(device)
            counts = sampler.counts(xs, n, _generators(seed, index[g:g + group], STAGE_PREDICT, device))
            top2 = counts.topk(min(2, counts.shape[1]), dim=1)
            for j in range(len(xs)):
                n_a = int(top2.values[j, 0])
                n_b = int(top2.values[j, 1]) if top2.values.shape[1] > 1 else 0
                significant = binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha
                out.append(int(top2.indices[j, 0]) if significant else ABSTAIN)
    finally:
        model.train(was_training)
    return torch.tensor(out, dtype=torch.long)


def _state(path: Path | None, identity: dict[str, Any]) -> PointState:
    """Finished points: (prediction, radius, p_lower, count_top) by test index; forward rows in the metadata."""
    return PointState(path, identity, {"prediction": torch.long, "radius": torch.float64, "p_lower": torch.float64,
                                       "count_top": torch.long}, "certification", extra_meta={"rows": 0})
