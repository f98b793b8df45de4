"""Gradient-masking checks: signs that a robustness number is an artefact of a broken attack.

Each check returns a CheckResult with a verdict, a one-line detail with the numbers, and the
name of its docs page (docs/checks/NAME.md) that explains the failure and what to do instead.
The checks follow Athalye et al. 2018, Carlini et al. 2019 ("On evaluating adversarial
robustness") and AutoAttack's own `checks.py`.

What they cost: `run_checks` returns its results with `passes` (forward and backward image rows through
the model), `seconds` and `n`. The two stronger attacks cost the most, so each runs only where its
answer can count and gives up on a point that could not reach the boundary at a few times its recent
progress: the convergence attack (APGD-CE-100 with 2 restarts; PGD-100 x2 for l1) on the points the
evaluation being checked left robust, Square (1000 queries) on the points every white-box attack left
robust.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import rng
from ..attacks import FGSM, PGD, build_attack
from ..predict import attack_mode
from ..errors import AdvlabError
from ..passes import PassCounter
from ..predict import model_device
from ..records import CheckRecord
from ..threat import Bounds, clip_to_bounds

DOCS = "docs/checks/{}.md"


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    doc: str
    explanation: str

    def as_dict(self) -> CheckRecord:
        return CheckRecord(name=self.name, passed=self.passed, detail=self.detail, doc=self.doc,
                           explanation=self.explanation)


class Checks(list):
    """run_checks' results (a list of CheckResult) and what they cost: `passes` {"forward", "backward"}
    (image rows through the model), `seconds` and `n` (the points checked)."""

    def __init__(self, results=(), *, passes: dict[str, int] | None = None, seconds: float = 0.0, n: int = 0):
        super().__init__(results)
        self.passes = dict(passes or {"forward": 0, "backward": 0})
        self.seconds, self.n = seconds, n


EXPLANATIONS = {
    "probabilities": "The model's outputs are probabilities, not logits. Losses computed on them have tiny, "
                     "badly scaled gradients, so attacks stall. Remove the final softmax before attacking.",
    "randomness": "Two identical forward passes gave different outputs: the model is randomised. A single "
                  "gradient sample points nowhere in particular; attack the expectation with an EOT wrapper.",
    "gradients": "Input gradients are zero, NaN or vanishing for many points (shattered gradients: "
                 "quantisation, saturated softmax, non-differentiable preprocessing). Gradient attacks then "
                 "fail for reasons unrelated to robustness: use BPDA, the margin loss, or a black-box attack.",
    "saturation": "The softmax is saturated: on most correctly classified points the cross-entropy and its "
                  "gradient are exactly zero in floating point although the logits have a gradient (a temperature-"
                  "scaled or distilled network). Attacks on cross-entropy see nothing there; use the margin or DLR "
                  "loss, or rescale the logits (--adaptive rescale).",
    "gradient_consistency": "The loss changes along small steps in a way the gradient does not predict: the "
                            "computed gradient is not the gradient of the function (non-differentiable or "
                            "obfuscated preprocessing). Replace it by BPDA with a differentiable approximation.",
    "monotone": "Robust accuracy rose with epsilon when each budget was attacked on its own. A larger ball "
                "contains the smaller one, so a correct attack can never do worse: the attack is unreliable.",
    "unbounded": "With an essentially unbounded budget every point can be turned into any image, so robust "
                 "accuracy must reach ~0%. If it does not, the attack is not finding adversarial examples "
                 "that exist.",
    "single_step": "FGSM (one step) broke more points than the iterative attack. An iterative attack includes "
                   "the single step as a special case; when it does worse, gradients are masked locally.",
    "black_box": "A black-box (score-based) attack broke points that white-box gradient attacks missed: "
                 "the gradients are misleading. Trust the black-box number or fix the gradient.",
    "convergence": "More steps and restarts still lowered robust accuracy: the attack had not converged, so "
                   "the reported number is an overestimate. Increase steps and restarts until it stops moving.",
    "detector": "Most adversarial examples from a boundary-stopping attack were rejected by the detector, "
                "so its robustness rests on the attack being naive. Attack it adaptively: ask for confident "
                "mistakes with the high-confidence attack (kappa above the detector's threshold).",
    "transfer": "Examples crafted on another model broke points the white-box attack missed: the white-box "
                "gradients of this model are misleading.",
}


def _result(name: str, passed: bool, detail: str) -> CheckResult:
    return CheckResult(name, bool(passed), detail, DOCS.format(name), EXPLANATIONS[name])


def check_probabilities(model, x, **_) -> CheckResult:
    with torch.no_grad(), attack_mode(model, evaluation=True):
        out = model(x)
    looks = bool((out >= 0).all() and (out <= 1).all() and torch.allclose(out.sum(1), torch.ones(len(out)),
                                                                           atol=1e-4))
    return _result("probabilities", not looks, "outputs are non-negative and sum to 1" if looks
                   else f"outputs range {out.min().item():.3g}..{out.max().item():.3g}: logits")


def check_randomness(model, x, **_) -> CheckResult:
    with torch.no_grad(), attack_mode(model, evaluation=True):
        a, b = model(x), model(x)
    diff = (a - b).abs().max().item()
    flips = (a.argmax(1) != b.argmax(1)).float().mean().item()
    return _result("randomness", diff <= 1e-5, f"max output difference {diff:.3g} between identical passes, "
                                               f"{100 * flips:.1f}% of predictions changed")


def _input_grads(model, x, y):
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), attack_mode(model, evaluation=True):
        loss = F.cross_entropy(model(x), y, reduction="none")
        grad, = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def check_gradients(model, x, y, **_) -> CheckResult:
    loss, grad = _input_grads(model, x, y)
    norms = grad.flatten(1).norm(dim=1)
    nan = (~torch.isfinite(grad)).flatten(1).any(1)
    correct_and_unsure = loss > 1e-6  # a perfectly confident point may legitimately have a tiny gradient
    zero = (norms < 1e-10) & correct_and_unsure & ~nan
    share_nan, share_zero = nan.float().mean().item(), zero.float().mean().item()
    passed = share_nan == 0 and share_zero <= 0.05
    return _result("gradients", passed, f"{100 * share_zero:.1f}% zero and {100 * share_nan:.1f}% NaN input "
                                        f"gradients (median norm {norms[~nan].median().item() if (~nan).any() else math.nan:.3g})")


# A few confident points of an ordinary network also round to a loss of exactly zero; a saturated
# softmax does it on (nearly) all of them.
SATURATION_SHARE = 0.5


def check_saturation(model, x, y, **_) -> CheckResult:
    """Share of the correctly classified points whose cross-entropy gradient is exactly zero while the
    margin z_y - max_{j != y} z_j has a non-zero gradient: the softmax, not the network, hides the slope."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), attack_mode(model, evaluation=True):
        logits = model(x)
        ce = F.cross_entropy(logits, y, reduction="none")
        g_ce, = torch.autograd.grad(ce.sum(), x, retain_graph=True)
        other = logits.detach().scatter(1, y[:, None], -torch.inf).argmax(1)
        gap = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, other[:, None])[:, 0]
        g_gap, = torch.autograd.grad(gap.sum(), x)
    correct = logits.detach().argmax(1) == y
    flat = (g_ce.flatten(1).abs().amax(1) == 0) & (g_gap.flatten(1).abs().amax(1) > 0) & correct
    share = flat.sum().item() / max(int(correct.sum()), 1)
    return _result("saturation", share <= SATURATION_SHARE,
                   f"{100 * share:.1f}% of the {int(correct.sum())} correctly classified points have an exactly zero "
                   f"cross-entropy gradient but not a zero margin gradient")


def check_gradient_consistency(model, x, y, *, step: float, bounds: Bounds, seed: int = 0, **_) -> CheckResult:
    """First-order prediction grad.d*h against the measured loss change along a random direction."""
    loss, grad = _input_grads(model, x, y)
    g = rng.generator(seed, 17)
    d = torch.randint(0, 2, x.shape, generator=g).to(x.dtype).mul_(2).sub_(1)
    x_step = clip_to_bounds(x + step * d.to(x.device), bounds)
    with torch.no_grad(), attack_mode(model, evaluation=True):
        changed = F.cross_entropy(model(x_step), y, reduction="none") - loss
    predicted = (grad * (x_step - x)).flatten(1).sum(1)
    moving = changed.abs() > 1e-4
    if moving.sum() < 5:
        return _result("gradient_consistency", True, "the loss barely changes along random steps; nothing to compare")
    c, p = changed[moving].double(), predicted[moving].double()
    corr = torch.corrcoef(torch.stack([c, p]))[0, 1].item() if p.std() > 0 else 0.0
    passed = math.isfinite(corr) and corr >= 0.5
    return _result("gradient_consistency", passed, f"correlation {corr:.2f} between the loss change along random "
                                                   f"steps of size {step:g} and the gradient's prediction")


def check_detector(detector, x, y, *, eps: float, norm: str = "linf", bounds: Bounds = None, seed: int = 0,
                   attacked: nn.Module | None = None, **_) -> CheckResult:
    """For a model with a reject option (`accepts(x) -> bool`): how many of PGD's successful
    adversarial examples does it reject? Many means its claim is untested against adaptive attacks.
    `attacked`: the module PGD runs on (default the detector; run_checks passes it wrapped in its counter)."""
    result = PGD(norm, steps=20, seed=seed)(attacked if attacked is not None else detector, x, y, [eps], bounds=bounds)
    fooled = result.success[0] & result.clean_correct
    if not fooled.any():
        return _result("detector", True, f"PGD-20 found no adversarial examples at eps {eps:g}")
    rejected = (~detector.accepts(result.x_adv[0][fooled])).float().mean().item()
    return _result("detector", rejected <= 0.5, f"at eps {eps:g} the detector rejected {100 * rejected:.0f}% of "
                                                f"PGD-20's {int(fooled.sum())} adversarial examples")


def run_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], *, norm: str = "linf",
               bounds: Bounds = None, seed: int = 0, thorough: bool = True, transfer_from: nn.Module | None = None,
               reported_robust: Mapping[float, torch.Tensor] | None = None,
               progress: Callable[[str], None] | None = None) -> Checks:
    """Run the checks on (x, y) - a few hundred points are enough - at the budgets `eps`.

    reported_robust: {eps: (N,) bool}, which of these points the evaluation being checked left robust
    at each budget. The convergence check then asks whether a stronger attack breaks points that
    evaluation missed (instead of points PGD-20 missed), and the black-box check runs Square only on the
    points that evaluation and the white-box attacks here all left robust.

    Returns the list of CheckResult with `passes`, `seconds` and `n` (Checks): what the checks cost
    (the passes of `model` only, not of `transfer_from`)."""
    started = time.perf_counter()
    log = progress or (lambda msg: None)
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    counted = PassCounter(model)
    eps = sorted(float(e) for e in eps if e > 0) or [0.1]
    mid = eps[len(eps) // 2]
    tolerance = max(2, math.ceil(0.02 * len(y)))  # points: below this, differences are attack noise
    results = [check_probabilities(counted, x[:64]), check_randomness(counted, x[:64]),
               check_gradients(counted, x, y), check_saturation(counted, x, y),
               check_gradient_consistency(counted, x[:128], y[:128], step=mid / 20, bounds=bounds, seed=seed)]
    log("checks: FGSM and PGD per epsilon")
    pgd = PGD(norm, steps=20, seed=seed)
    independent = [pgd(counted, x, y, [e], bounds=bounds).correct[0] for e in eps]  # no cascade between budgets
    results.append(_monotone(eps, independent, tolerance))
    results.append(_single_step(counted, x, y, eps, independent, norm, bounds, tolerance))
    log("checks: unbounded attack")
    results.append(_unbounded(counted, x, y, norm, bounds, seed))
    pgd_robust = independent[eps.index(mid)]  # (N,) what PGD-20 left robust at the middle budget
    if thorough:
        results += _stronger_attacks(counted, x, y, mid, pgd_robust, norm, bounds, seed, tolerance, reported_robust,
                                     log)
    if hasattr(model, "accepts"):
        results.append(check_detector(model, x, y, eps=mid, norm=norm, bounds=bounds, seed=seed, attacked=counted))
    if transfer_from is not None:
        results.append(_transfer(counted, transfer_from, pgd, x, y, mid, pgd_robust, bounds, tolerance))
    return Checks(results, passes=counted.counts(), seconds=time.perf_counter() - started, n=len(y))


def _monotone(eps: list[float], independent: list[torch.Tensor], tolerance: int) -> CheckResult:
    """Robust accuracy must not rise with epsilon (each budget attacked alone, PGD-20)."""
    counts = [int(r.sum()) for r in independent]
    rises = [(eps[i], eps[i + 1]) for i in range(len(eps) - 1) if counts[i + 1] > counts[i] + tolerance // 2]
    return _result("monotone", not rises, "robust points per epsilon (each attacked alone): " +
                   ", ".join(f"{e:g}: {c}" for e, c in zip(eps, counts)))


def _single_step(model, x, y, eps: list[float], independent: list[torch.Tensor], norm: str, bounds: Bounds,
                 tolerance: int) -> CheckResult:
    """FGSM must not leave many more points robust than PGD-20 at any budget."""
    n = len(y)
    fgsm = [FGSM(norm)(model, x, y, [e], bounds=bounds).correct[0] for e in eps]
    worst = max(range(len(eps)), key=lambda i: int(independent[i].sum()) - int(fgsm[i].sum()))
    gap = int(independent[worst].sum()) - int(fgsm[worst].sum())
    return _result("single_step", gap <= tolerance,
                   f"at eps {eps[worst]:g}: FGSM leaves {int(fgsm[worst].sum())}/{n} robust, "
                   f"PGD-20 {int(independent[worst].sum())}/{n}")


def _unbounded(model, x, y, norm: str, bounds: Bounds, seed: int) -> CheckResult:
    """An attack with a budget that covers the whole input domain must break every point."""
    huge = _unbounded_eps(x, bounds, norm)
    unbounded = PGD(norm, steps=50, seed=seed, loss="margin")(model, x, y, [huge], bounds=bounds).robust_accuracy()[0]
    return _result("unbounded", unbounded <= 0.01, f"robust accuracy {unbounded:.3f} at eps {huge:g} (must be ~0)")


# The stronger attacks of the thorough checks (measured against the full budgets in docs/evaluate.md, "What
# the checks cost"): APGD-CE with 100 steps and 2 restarts, giving up on a point at 3x its recent progress,
# broke as many of the points the `fast` suite left robust as PGD-100 x 2 or more in six digits settings,
# with 23-48% of its passes (PGD-100 x 2 for l1, which APGD does not support); Square with give_up=2 broke
# as many as the whole 1000 queries or more with 30-67% of the queries.
CONVERGENCE_STEPS, CONVERGENCE_RESTARTS, CONVERGENCE_GIVE_UP = 100, 2, 3.0
SQUARE_QUERIES, SQUARE_GIVE_UP = 1000, 2.0


def _convergence_attack(norm: str, seed: int):
    """(the stronger attack of the convergence check, its name in the detail)."""
    if norm in ("linf", "l2"):
        return (build_attack("apgd-ce", norm=norm, steps=CONVERGENCE_STEPS, restarts=CONVERGENCE_RESTARTS,
                             give_up=CONVERGENCE_GIVE_UP, seed=seed),
                f"APGD-CE-{CONVERGENCE_STEPS} x{CONVERGENCE_RESTARTS}")
    return PGD(norm, steps=CONVERGENCE_STEPS, restarts=CONVERGENCE_RESTARTS, seed=seed), \
        f"PGD-{CONVERGENCE_STEPS} x{CONVERGENCE_RESTARTS}"


def _stronger_attacks(model, x, y, mid: float, pgd_robust: torch.Tensor, norm: str, bounds: Bounds, seed: int,
                      tolerance: int, reported_robust: Mapping[float, torch.Tensor] | None,
                      log: Callable[[str], None]) -> list[CheckResult]:
    """Convergence (APGD-CE-100 with 2 restarts; PGD for l1) and, where the norm has one, a black-box attack
    (Square) must not break many points that the weaker attack (or the evaluation being checked) left robust.

    Each runs only on the points whose result can count: a point already broken cannot be broken again,
    so the convergence attack runs on what the baseline left robust, and Square on what every white-box
    attack left robust."""
    n = len(y)
    # Masks stay on the CPU, where attack results come back; rows are taken from x on its device.
    if reported_robust is not None:
        baseline, what = _reported_at(reported_robust, mid, n, "cpu"), "the evaluation"
    else:
        baseline, what = pgd_robust.cpu(), "PGD-20"
    todo = baseline.nonzero().flatten()
    attack, label = _convergence_attack(norm, seed + 1)
    log(f"checks: convergence ({label}) on the {len(todo)} points {what} left robust")
    strong = torch.zeros_like(baseline)  # (N,) robust to the stronger attack too (False where the baseline broke it)
    if len(todo):
        rows = todo.to(x.device)
        strong[todo] = attack(model, x[rows], y[rows], [mid], bounds=bounds).correct[0].cpu()
    gained = len(todo) - int(strong.sum())
    results = [_result("convergence", gained <= tolerance,
                       f"at eps {mid:g}: {label} broke {gained} points {what} missed "
                       f"({int(strong.sum())} vs {len(todo)} robust of {n})")]
    try:
        square = build_attack("square", norm=norm, n_queries=SQUARE_QUERIES, give_up=SQUARE_GIVE_UP, seed=seed)
    except Exception:  # the black-box attack is not available for this norm
        square = None
    if square is not None:
        white = (pgd_robust.cpu() & strong).nonzero().flatten()  # robust to every white-box attack (strong <= baseline)
        log(f"checks: black-box Square attack on the {len(white)} points the white-box attacks left robust")
        extra = 0
        if len(white):
            rows = white.to(x.device)
            black = square(model, x[rows], y[rows], [mid], bounds=bounds).correct[0]
            extra = len(white) - int(black.sum())
        results.append(_result("black_box", extra <= tolerance,
                               f"at eps {mid:g}: Square ({SQUARE_QUERIES} queries) broke {extra} of the {len(white)} "
                               f"points the white-box attacks left robust"))
    return results


def _transfer(model, surrogate: nn.Module, pgd: PGD, x, y, mid: float, pgd_robust: torch.Tensor, bounds: Bounds,
              tolerance: int) -> CheckResult:
    """PGD-20 examples crafted on a surrogate must not break many points PGD-20 on the model missed."""
    with attack_mode(surrogate, evaluation=True):
        x_t = pgd.perturb(surrogate, x, y, mid, bounds=bounds)
    with torch.no_grad(), attack_mode(model, evaluation=True):
        transferred = model(x_t).argmax(1) == y
    extra = int((pgd_robust & ~transferred).sum())
    return _result("transfer", extra <= tolerance,
                   f"at eps {mid:g}: examples from the surrogate broke {extra} points PGD missed")


def _unbounded_eps(x: torch.Tensor, bounds: Bounds, norm: str) -> float:
    """A budget that covers the whole input domain."""
    if bounds is not None:
        width = float(torch.as_tensor(bounds[1]).max() - torch.as_tensor(bounds[0]).min())
    else:
        width = 20 * float(x.std()) + 1.0
    d = x[0].numel()
    return {"linf": width, "l2": width * math.sqrt(d), "l1": width * d}[norm]


def _reported_at(reported_robust: Mapping[float, torch.Tensor], eps: float, n: int, device) -> torch.Tensor:
    match = [v for e, v in reported_robust.items() if math.isclose(float(e), eps, rel_tol=1e-9, abs_tol=1e-12)]
    if not match or len(match[0]) != n:
        raise AdvlabError(f"reported_robust needs an ({n},) robust flag tensor for eps {eps:g}; "
                          f"got budgets {sorted(float(e) for e in reported_robust)}")
    return torch.as_tensor(match[0], dtype=torch.bool).to(device)


# A stronger attack finding more says the evaluation was too weak, not that gradients are masked.
ATTACK_STRENGTH = {"convergence"}


def verdict(checks: Sequence[CheckResult]) -> str:
    """'ok'; 'not converged: ...' when only the attack's strength is in doubt; otherwise
    'suspicious: ...' listing every failed check (signs of gradient masking)."""
    failed = [c.name for c in checks if not c.passed]
    if not failed:
        return "ok"
    if set(failed) <= ATTACK_STRENGTH:
        return "not converged: a stronger attack broke more points; the robust accuracy is an overestimate"
    return "suspicious: " + ", ".join(failed)
