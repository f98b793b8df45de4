"""Reduced-precision search, fp32 verdicts: `--precision fp32|bf16|fp16`.

    from advlab.precision import with_precision
    result = with_precision(PGD(norm="linf", steps=20), "bf16")(model, x, y, eps=[8 / 255], bounds=(0, 1))

The attack's own forward and backward passes (the search) run under torch.autocast in bf16 or fp16;
everything that counts is fp32: the clean logits, and the score of every example the search returns
(the attack base class scores each returned example with the model as given, in fp32). A point the
search believes broken (its goal met on the low-precision logits) that the fp32 model still gets right
is searched again, from scratch, in fp32 (`verified_search`), so reduced precision can make a search
cheaper but never invents a break: every reported example is misclassified by the fp32 model, and a
point the low-precision search misled is given a full fp32 search before it is counted robust. A
minimal-norm attack (DeepFool, CW: unbounded, it should always reach its goal) searches every row that
fp32 does not confirm again in fp32, whatever the low-precision logits said.

What it does not promise: a fixed-budget search that fails in bf16 (the point looked robust in bf16
too) is not repeated in fp32, so bf16 can find a few breaks fewer or more than fp32, as a different
random start would; measured on digits and Fashion-MNIST in tests/test_precision.py and
benchmarks/results/gpu.md. Searches that need precise gradients or boundaries (DeepFool's
linearisation) gain nothing from it.

fp16 has 5 exponent bits: the input gradient of a loss through a deep network can underflow to zero.
`Autocast` scales the gradient by FP16_LOSS_SCALE where it enters the network (at the logits, in fp32)
and divides it out where it leaves (at the input, in fp32): a static loss scale, invisible to the
attack. bf16 has fp32's exponent range and needs none. Both run on CUDA and on the CPU (torch's CPU
autocast takes both; fp16 is slow there, bf16 fast only on CPUs with bf16 units).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import AdvlabError
from .predict import model_device

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP16_LOSS_SCALE = 2.0 ** 10  # gradients of a per-example loss at the logits are <= 1: far from fp16's 65504


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise AdvlabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def with_precision(attack, precision: str = "fp32", graphs: bool = False):
    """A copy of `attack` whose search runs in `precision` (and, with `graphs`, through CUDA graphs:
    advlab.graphs); the attack passed in is left as it was."""
    check_precision(precision)
    if not isinstance(graphs, bool):
        raise AdvlabError(f"graphs must be true or false, got {graphs!r}")
    out = copy.copy(attack)
    out.precision, out.graphs = precision, graphs
    return out


class _GradScale(torch.autograd.Function):
    """Identity forward; the gradient multiplied by `scale` on the way back."""

    @staticmethod
    def forward(ctx, t, scale):
        ctx.scale = scale
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class Autocast(nn.Module):
    """`model` run under torch.autocast(dtype), returning fp32 logits; fp16 with a static loss scale
    (the gradient is multiplied by `scale` at the logits and divided by it at the input)."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        self.model, self.precision = model, precision
        self.dtype = DTYPES[precision]
        self.device_type = model_device(model).type
        self.scale = FP16_LOSS_SCALE if precision == "fp16" else 1.0
        self.training = model.training  # mirror the model (see passes.PassCounter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = self.scale != 1.0 and x.requires_grad and torch.is_grad_enabled()
        if scaled:
            x = _GradScale.apply(x, 1.0 / self.scale)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        out = out.float()
        if scaled:
            out = _GradScale.apply(out, self.scale)
        return out


def check_device(precision: str, device: torch.device) -> None:
    """Reduced precision where autocast runs it: CUDA (bf16 on GPUs that have it) and the CPU."""
    if precision == "fp32":
        return
    if device.type not in ("cpu", "cuda"):
        raise AdvlabError(f"precision {precision} runs on cpu or cuda, not {device.type}; use precision fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AdvlabError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                          "use precision fp16 (loss-scaled) or fp32")


def search_model(model: nn.Module, precision: str = "fp32", graphs: bool = False) -> nn.Module:
    """The model the search runs: `model` itself in fp32, else under autocast; with `graphs`, captured
    (advlab.graphs, CUDA only)."""
    if precision != "fp32":
        check_device(precision, model_device(model))
        model = Autocast(model, precision)
    if graphs:
        from .graphs import graphed
        model = graphed(model)
    return model


def verified_search(attack, model: nn.Module, search, idx: torch.Tensor, y: torch.Tensor,
                    targets: torch.Tensor | None):
    """Examples for the batch rows `idx`, found by `search(m, rows) -> examples` (inside the ball)
    with attack.precision's search model, and their fp32 logits (the model as given).

    Rows the low-precision search believed broken that fp32 does not confirm are searched again in fp32; for a
    minimal-norm attack (unbounded: it should always reach its goal) every row fp32 does not confirm is."""
    precision = getattr(attack, "precision", "fp32")
    low = search_model(model, precision, getattr(attack, "graphs", False))
    new = search(low, idx)
    with torch.no_grad():
        logits = model(new)  # fp32: the only verdict that counts
    if precision == "fp32":
        return new, logits
    tgt = targets[idx] if targets is not None else None
    unconfirmed = ~attack.goal.met(logits, y[idx], tgt)
    if not unconfirmed.any():
        return new, logits
    pos = unconfirmed.nonzero().flatten()
    if not attack.minimal:  # a minimal-norm attack must reach its goal: any miss was the search's fault
        with torch.no_grad():
            claimed = attack.goal.met(low(new[pos]), y[idx[pos]], tgt[pos] if tgt is not None else None)
        if not claimed.any():
            return new, logits
        pos = pos[claimed]  # the low-precision search said "broken", fp32 says not: search these in fp32
    again = search(model, idx[pos])
    with torch.no_grad():
        logits_again = model(again)
    new, logits = new.clone(), logits.clone()
    new[pos], logits[pos] = again, logits_again.to(logits.dtype)
    return new, logits
