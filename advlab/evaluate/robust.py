"""Robust accuracy the honest way: the worst case per example over a suite of attacks.

For every epsilon (smallest first) each attack of the suite runs only on the points still
robust; a point broken at a smaller epsilon stays broken (its example is inside the larger ball).
The state is saved after every batch of every attack, so an interrupted evaluation resumes where
it stopped, and because every batch draws its randomness from (seed, eps, attack, batch) it ends
with the same numbers as one that never stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import distributed, rng
from ..attacks.base import Attack
from ..attacks.harness import check_inputs, run_attack
from ..attacks.budget import describe_eps, per_example_budgets
from ..attacks.cascade import eps_order, still_broken
from ..errors import AdvlabError
from ..io import load_tensors, read_metadata, save_tensors
from ..models.adaptive import sees_through
from ..heap import release_freed_memory
from ..passes import PassCounter, add_counts
from ..precision import check_device, check_precision, with_precision
from ..device import default_batch_size
from ..predict import attack_mode, model_device, predict_logits
from ..progress import progress as progress_bar
from ..progress import write
from ..records import EvaluateRow
from ..rundir import PARTS_DIR, STATE_FILE
from ..threat import Bounds
from .stats import clopper_pearson, confusion, per_class_accuracy
from .suites import SuiteEntry

ROBUST, CLEAN_MISTAKE = -1, 0  # broken_by codes; attack i of the suite is i + 1


@dataclass
class Evaluation:
    eps: list[float]
    norm: str
    attacks: list[str]               # suite labels
    y: torch.Tensor                  # (N,)
    clean_logits: torch.Tensor       # (N, K)
    broken_by: torch.Tensor          # (E, N) -1 robust, 0 clean mistake, i+1 attack i
    x_adv: torch.Tensor | None       # (E, N, ...) the breaking example (the clean input if robust); None when
                                     # evaluated in chunks (advlab.evaluate.chunked: each chunk's file holds them)
    logits: torch.Tensor             # (E, N, K) model output on x_adv
    seconds: float = 0.0
    attack_seconds: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)          # model rows, forward and backward
    attack_passes: dict[str, dict[str, int]] = field(default_factory=dict)  # the same, per attack of the suite
    oom_batch_sizes: dict[str, int] = field(default_factory=dict)  # attack -> batch size after running out of memory
    precision: str = "fp32"          # what the attacks searched in; every number is fp32 (advlab.precision)

    @property
    def num_classes(self) -> int:
        return self.clean_logits.shape[1]

    @property
    def robust(self) -> torch.Tensor:  # (E, N)
        return self.broken_by == ROBUST

    def clean_accuracy(self) -> float:
        return (self.clean_logits.argmax(1) == self.y).float().mean().item()

    def robust_accuracy(self) -> list[float]:
        return self.robust.float().mean(1).tolist()

    def ci95(self) -> list[tuple[float, float]]:
        n = len(self.y)
        return [clopper_pearson(int(r.sum()), n) for r in self.robust]

    def per_class(self) -> list[list[float]]:
        return [per_class_accuracy(r, self.y, self.num_classes) for r in self.robust]

    def adversarial_confusion(self) -> list[list[list[int]]]:
        """Per epsilon: `counts[true][predicted]`, predicted on the adversarial example."""
        return [confusion(self.y, lg.argmax(1), self.num_classes) for lg in self.logits]

    def broken_by_attack(self) -> list[dict[str, int]]:
        """Per epsilon, how many points each attack was the first to break."""
        names = ["clean mistake", *self.attacks]
        return [{name: int((b == i).sum()) for i, name in enumerate(names)} for b in self.broken_by]

    def confidence(self) -> dict[str, Any]:
        """Mean probability of the wrong answer: on adversarial mistakes (per eps) and on clean mistakes."""
        p_adv = self.logits.softmax(2)
        adv = []
        for e in range(len(self.eps)):
            wrong = (self.broken_by[e] > CLEAN_MISTAKE)  # mistakes the attacks made
            adv.append(p_adv[e][wrong].amax(1).mean().item() if wrong.any() else float("nan"))
        p_clean = self.clean_logits.softmax(1)
        clean_wrong = p_clean.argmax(1) != self.y
        clean = p_clean[clean_wrong].amax(1).mean().item() if clean_wrong.any() else float("nan")
        return {"adversarial": adv, "clean_mistakes": clean}

    def results(self) -> list[EvaluateRow]:
        """One record per epsilon, with the names `advlab evaluate --json` prints."""
        conf = self.confidence()["adversarial"]
        return [EvaluateRow(eps=e, robust_accuracy=r, ci95=list(ci), per_class=pc, mean_wrong_confidence=c,
                            broken_by=b)
                for e, r, ci, pc, c, b in zip(self.eps, self.robust_accuracy(), self.ci95(), self.per_class(), conf,
                                              self.broken_by_attack())]


def evaluate_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float] | Any,
                        suite: Sequence[SuiteEntry], *, norm: str = "linf", bounds: Bounds = None, seed: int = 0,
                        batch_size: int | None = None, state_dir: str | Path | None = None, progress: bool = True,
                        identity: dict[str, Any] | None = None, precision: str = "fp32", graphs: bool = False,
                        shares: int | None = None) -> Evaluation:
    """Worst case over `suite` per example and epsilon; resumable when `state_dir` is given.

    Under torchrun (advlab.distributed) every rank calls this with the same arguments: the batches
    of each attack are dealt out round-robin and merged after the attack. `shares` (default: the
    number of processes) cuts each attack's still-robust points into batches of equal size, a multiple
    of `shares` of them (advlab.distributed.stage_batches), so no rank idles while another works
    through a tail. The result is exactly that of one process with the same `shares` (each batch draws
    its randomness from (seed, eps, attack, batch) alone).
    `precision` (fp32, bf16, fp16): what the attacks search in; every break is verified in fp32, and
    `graphs` runs the search through CUDA graphs (advlab.precision, advlab.graphs).
    """
    check_inputs(x, y, bounds)
    if not suite:
        raise AdvlabError("the attack suite is empty")
    suite = [entry for entry in suite if entry.applies_to(model, x)]  # e.g. a BPDA stage only where BPDA applies
    if not suite:
        raise AdvlabError("no stage of the suite applies to this model (each needs a preprocessing layer that "
                          "BPDA can see through)")
    for entry in suite:  # an attack asked for BPDA without `needs`: refused now, not after the stages before it
        if entry.options.get("bpda") and not sees_through(model, x):
            raise AdvlabError(f"stage {entry.label!r} searches through BPDA, but this model has no preprocessing "
                              "layer BPDA can see through (advlab.models.Preprocessed, shape-preserving or with a "
                              "backward_approximation); give it needs = \"preprocessing\" or leave it out")
    batch_size = _check_batch_size(batch_size, model)
    budgets = per_example_budgets(eps, len(x))
    eps_values = describe_eps(eps)
    attacks = [entry.build(norm) for entry in suite]  # validate everything before any work
    check_device(check_precision(precision), model_device(model))
    if precision != "fp32" or graphs:
        attacks = [with_precision(a, precision, graphs) for a in attacks]
    shares = distributed.world_size() if shares is None else shares
    if isinstance(shares, bool) or not isinstance(shares, int) or shares < 1:
        raise AdvlabError(f"shares must be a positive integer (the batches per attack are a multiple of it), "
                          f"got {shares!r}")
    labels = [entry.label for entry in suite]
    ident = {"eps": eps_values, "norm": norm, "suite": [[s.label, s.attack, s.options] for s in suite],
             "n": len(y), "seed": seed, "batch_size": batch_size, **(identity or {})}
    if precision != "fp32":  # the search's precision and the batch layout change the numbers; fp32 and
        ident["precision"] = precision  # one share leave the identity as before (states saved earlier resume)
    if shares != 1:
        ident["shares"] = shares
    counter = PassCounter(model)
    state = _State.load_or_start(state_dir, ident, counter, x, y, len(budgets))
    run = _Cascade(counter, x, y, budgets, eps_order(budgets), eps_values, attacks, labels, bounds, seed, batch_size,
                   progress, state, start=time.perf_counter() - state.seconds, shares=shares)
    stages = [(e, a) for e in run.order for a in range(len(attacks))]
    try:
        with attack_mode(model, evaluation=True):
            for stage_number, (e, a) in enumerate(stages):
                if stage_number >= state.stage:
                    run.stage(stage_number, e, a)
    except KeyboardInterrupt:
        if run.ranks == 1:  # under torchrun the last merged attack is the checkpoint
            run.save()
        if state_dir is not None and distributed.is_main():
            write(f"interrupted: evaluation state saved in {state_dir}; run the same command again to resume")
        raise
    passes = add_counts(state.saved_passes, counter.counts())
    if run.ranks > 1:
        passes = dict(zip(passes, (int(v) for v in distributed.all_reduce_sum(list(passes.values())))))
    return Evaluation(eps_values, norm, labels, y.cpu(), state.clean_logits, state.broken_by, state.x_adv,
                      state.logits, time.perf_counter() - run.start, dict(state.attack_seconds), passes=passes,
                      attack_passes=dict(state.attack_passes), oom_batch_sizes=dict(state.oom), precision=precision)


def _check_batch_size(batch_size: int | None, model: nn.Module) -> int:
    if batch_size is None:  # large on a GPU, 500 on the CPU (advlab.device.default_batch_size)
        batch_size = default_batch_size(model_device(model))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdvlabError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


@dataclass
class _Cascade:
    """One evaluation under way: its inputs and its state. A stage is one attack at one epsilon, run
    batch by batch on the points still robust there."""
    counter: PassCounter  # the model, counting its passes
    x: torch.Tensor
    y: torch.Tensor
    budgets: list[torch.Tensor]  # (N,) per epsilon
    order: list[int]  # the epsilons, smallest first
    eps_values: list[float]
    attacks: list[Attack]
    labels: list[str]
    bounds: Bounds
    seed: int
    batch_size: int
    progress: bool
    state: _State
    start: float  # perf_counter() at the start, less the seconds of the sessions before a resume
    shares: int = 1  # the batch layout of a stage (distributed.stage_batches)
    ranks: int = field(default_factory=distributed.world_size)
    rank: int = field(default_factory=distributed.rank)

    def stage(self, stage_number: int, e: int, a: int) -> None:
        state = self.state
        if state.batch == 0 and state.subset is None:
            _inherit_smaller_eps(state, self.budgets, self.order, e)
            state.subset = (state.broken_by[e] == ROBUST).nonzero().flatten()
        subset = state.subset
        batches = distributed.stage_batches(len(subset), self.batch_size, self.shares)
        mine = torch.zeros(len(subset), dtype=torch.bool)  # rows this process broke in this stage
        desc = f"eps {self.eps_values[e]:g} {self.labels[a]}"
        todo = [b for b in range(state.batch, len(batches)) if b % self.ranks == self.rank]
        for b in progress_bar(todo, desc, self.progress and distributed.is_main(), total=len(todo)):
            self.batch(stage_number, e, a, b, subset, mine, batches[b])
        if self.ranks > 1:
            hit = _merge_ranks(state, e, subset, mine)
            state.save_part(stage_number, 0, e, hit, state.x_adv[e, hit])
        state.stage, state.batch, state.subset = stage_number + 1, 0, None
        self.save()

    def batch(self, stage_number: int, e: int, a: int, b: int, subset: torch.Tensor, mine: torch.Tensor,
              rows: slice) -> None:
        """Batch b of the stage, `rows` of `subset`: attack it, record what broke (`mine` marks those rows)."""
        state, label = self.state, self.labels[a]
        idx = subset[rows]
        attack = self.attacks[a]
        t0, before = time.perf_counter(), self.counter.counts()
        # The harness at one budget; it starts from the batch size that fitted the device's memory before.
        r = run_attack(attack, self.counter, self.x[idx], self.y[idx], [self.budgets[e][idx]], bounds=self.bounds,
                       seed=rng.derive_seed(self.seed, e, a, b), fitted=state.oom.get(label))
        if r.info.get("batch_size_after_oom"):  # the attack ran out of device memory: the batch size that fitted
            state.oom[label] = r.info["batch_size_after_oom"]
        state.attack_seconds[label] = state.attack_seconds.get(label, 0.0) + time.perf_counter() - t0
        spent = {k: v - before[k] for k, v in self.counter.counts().items()}
        state.attack_passes[label] = add_counts(state.attack_passes.get(label), spent)
        newly = ~r.correct[0]
        hit = idx[newly]
        mine[rows] |= newly
        state.broken_by[e, hit] = a + 1
        state.found_at[e, hit] = e
        state.x_adv[e, hit] = r.x_adv[0][newly].to(state.x_adv.dtype)
        state.logits[e, hit] = r.logits[0][newly]
        if self.ranks == 1:  # one process saves after every batch; ranks save once merged
            state.save_part(stage_number, b, e, hit, state.x_adv[e, hit])
            state.batch = b + 1
            self.save()
        del r
        release_freed_memory()

    def save(self) -> None:
        """Write the state, with the time and the passes so far."""
        self.state.seconds = time.perf_counter() - self.start
        self.state.passes = add_counts(self.state.saved_passes, self.counter.counts())
        self.state.save()


def _merge_ranks(state: "_State", e: int, subset: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    """After an attack under torchrun: every rank gets every rank's breaks at eps e (ranks broke
    disjoint rows, so a sum of zero-padded rows is exact). Returns the dataset indices broken."""
    broken_by = state.broken_by[e, subset].clone()
    broken_by[~mine] = ROBUST - 1  # -2: not this rank's news, so max() keeps whoever broke it
    rows = torch.zeros_like(state.x_adv[e, subset])
    rows[mine] = state.x_adv[e, subset[mine]]
    logits = torch.zeros_like(state.logits[e, subset])
    logits[mine] = state.logits[e, subset[mine]]
    broken_by = distributed.all_reduce_tensor(broken_by, "max")
    rows, logits = (distributed.all_reduce_tensor(t, "sum") for t in (rows, logits))
    news = broken_by > ROBUST - 1
    hit = subset[news]
    state.broken_by[e, hit] = broken_by[news]
    state.found_at[e, hit] = e
    state.x_adv[e, hit] = rows[news]
    state.logits[e, hit] = logits[news]
    return hit


def _inherit_smaller_eps(state: "_State", budgets: list[torch.Tensor], order: list[int], e: int) -> None:
    """Before the first attack at eps e: points broken at the next smaller budget are broken here too."""
    pos = order.index(e)
    if pos == 0:
        return
    prev = order[pos - 1]
    carry = still_broken(state.broken_by[prev] != ROBUST, budgets[prev], budgets[e]) & (state.broken_by[e] == ROBUST)
    state.broken_by[e, carry] = state.broken_by[prev, carry]
    state.found_at[e, carry] = state.found_at[prev, carry]
    state.x_adv[e, carry] = state.x_adv[prev, carry]
    state.logits[e, carry] = state.logits[prev, carry]


class _State:
    """Everything an evaluation needs to continue.

    Small bookkeeping (which attack broke which point at which budget, logits, where in the
    schedule we are) is rewritten after every batch; the adversarial examples themselves go to one
    append-only part file per batch holding just the rows that batch broke, so saving costs
    O(batch), not O(N). On resume the parts are replayed in order.
    """

    def __init__(self, path: Path | None, identity: dict[str, Any]):
        self.path, self.identity = path, identity
        self.stage = self.batch = 0
        self.subset: torch.Tensor | None = None
        self.seconds = 0.0
        self.attack_seconds: dict[str, float] = {}
        self.attack_passes: dict[str, dict[str, int]] = {}  # this process's rank only under torchrun
        self.saved_passes: dict[str, int] = {}  # counted before this process started (resumed work)
        self.passes: dict[str, int] = {}
        self.oom: dict[str, int] = {}

    @property
    def parts(self) -> Path:
        return self.path.parent / PARTS_DIR

    @classmethod
    def load_or_start(cls, state_dir, identity, model, x, y, n_eps) -> "_State":
        path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        state = cls(path, json.loads(json.dumps(identity, default=str)))
        state.x_adv = x.detach().cpu().unsqueeze(0).repeat(n_eps, *[1] * x.ndim)
        if path is not None and path.is_file():
            meta = json.loads(read_metadata(path)["advlab"])
            if meta["identity"] == state.identity:
                t = load_tensors(path)
                state.clean_logits, state.broken_by, state.found_at, state.logits = (
                    t["clean_logits"], t["broken_by"], t["found_at"], t["logits"])
                state.subset = t.get("subset")
                state.stage, state.batch = meta["stage"], meta["batch"]
                state.seconds, state.attack_seconds = meta["seconds"], meta["attack_seconds"]
                state.saved_passes, state.oom = meta.get("passes", {}), meta.get("oom", {})
                state.attack_passes = meta.get("attack_passes", {})
                state._replay_parts()
                write(f"resuming the evaluation saved in {path.parent} (stage {state.stage + 1}, batch {state.batch})")
                return state
            write(f"{path} belongs to a different evaluation; starting over")
        if path is not None and state.parts.is_dir() and distributed.is_main():
            shutil.rmtree(state.parts)
        state.clean_logits = distributed.shard_evaluate(lambda rows: predict_logits(model, rows), x)
        wrong = state.clean_logits.argmax(1) != y.cpu()
        state.broken_by = torch.full((n_eps, len(y)), ROBUST, dtype=torch.int64)
        state.broken_by[:, wrong] = CLEAN_MISTAKE
        state.found_at = torch.full((n_eps, len(y)), -1, dtype=torch.int64)  # budget index of each example
        state.logits = state.clean_logits.unsqueeze(0).repeat(n_eps, 1, 1)
        return state

    def save_part(self, stage: int, batch: int, e: int, idx: torch.Tensor, rows: torch.Tensor) -> None:
        if self.path is None or len(idx) == 0 or not distributed.is_main():
            return
        save_tensors(self.parts / f"{stage:05d}-{batch:06d}.safetensors", {"idx": idx, "x": rows},
                     {"eps_index": str(e)})

    def _replay_parts(self) -> None:
        """Examples from the part files up to the saved position, then carried to larger budgets."""
        if self.parts.is_dir():
            for f in sorted(self.parts.glob("*.safetensors")):
                stage, batch = (int(v) for v in f.stem.split("-"))
                if (stage, batch) >= (self.stage, self.batch):
                    continue  # written by a batch whose bookkeeping was never saved: it will rerun
                e = int(read_metadata(f)["eps_index"])
                t = load_tensors(f)
                self.x_adv[e, t["idx"]] = t["x"].to(self.x_adv.dtype)
        for e in range(len(self.found_at)):
            carried = (self.found_at[e] >= 0) & (self.found_at[e] != e)
            self.x_adv[e, carried] = self.x_adv[self.found_at[e, carried], carried.nonzero().flatten()]

    def save(self) -> None:
        if self.path is None or not distributed.is_main():
            return
        tensors = {"clean_logits": self.clean_logits, "broken_by": self.broken_by, "found_at": self.found_at,
                   "logits": self.logits}
        if self.subset is not None:
            tensors["subset"] = self.subset
        meta = {"identity": self.identity, "stage": self.stage, "batch": self.batch, "seconds": self.seconds,
                "attack_seconds": self.attack_seconds, "passes": self.passes, "oom": self.oom,
                "attack_passes": self.attack_passes}
        save_tensors(self.path, tensors, {"advlab": json.dumps(meta)})
