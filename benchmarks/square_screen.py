"""Square's screen and give-up rules replayed on recorded full-budget runs: what each rule saves, what it misses.

    python benchmarks/square_screen.py --models standard,quantize,pgd-at --n 100        # record (cached) + replay
    python benchmarks/square_screen.py --replay-only                                    # replay what is recorded

Recording: Square (5,000 queries, Linf 0.1, seed 0, no early stop) on the first N Fashion-MNIST test images of a
panel model (benchmarks/panel_models.py), on the points the `standard` suite's gradient attacks (APGD-CE, APGD-T)
leave robust ("after") and on every correctly classified point ("alone": a stand-in for a model whose gradients
mislead, where Square is the only attack that works). A wrapper keeps each point's margin z_y - max_{j != y} z_j
at every query, so the best margin after q queries is the running minimum and the query that breaks the point
is known. Recordings: benchmarks/.cache/square-traces/.

Replay: a rule decides, from the best margins so far, when each point stops being queried; a point stops when
broken, when the screen drops it (after s queries, if no point of the run is broken yet, only points whose
margin is at most `share` of their start margin go on) or when give_up drops it (hopeless at 5, 10, 20, 40,
60, 80% of the budget). Its cost is the queries spent; a miss is a point the full run broke that the rule
dropped first. The replay assumes a point's trajectory does not depend on which other points are still
queried (in the attack they share one random stream, so after a drop the draws differ: a replayed miss may
not be a real one, and the other way round). Writes benchmarks/results/square_screen.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, RESULTS, markdown_table  # noqa: E402

EPS, QUERIES = 0.1, 5000
TRACES = CACHE / "square-traces"
CHECKPOINTS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


class MarginRecorder(nn.Module):
    """The model, keeping the margin of every row of every forward pass (Square without early stop queries
    all rows in their order every time)."""

    def __init__(self, model, y):
        super().__init__()
        self.model, self.y, self.margins = model, y, []

    def forward(self, x):
        from advlab.attacks.losses import margin
        out = self.model(x)
        if len(x) == len(self.y):
            # advlab's `margin` is max_{j != y} z_j - z_y (> 0: broken); the recording keeps z_y - max_{j != y} z_j
            self.margins.append((-margin(out.detach(), self.y)).half().float())
        return out


def record(name, model, x, y, situation) -> dict:
    path = TRACES / f"{name}-{situation}-{len(x)}.pt"
    if path.exists():
        return torch.load(path)
    from advlab.attacks import Square
    from advlab.evaluate import evaluate_robustness, get_suite
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    if situation == "after":
        keep = evaluate_robustness(model, x, y, [EPS], get_suite("standard")[:2], bounds=(0.0, 1.0),
                                   progress=False).robust[0]
    xs, ys = x[keep], y[keep]
    rec = MarginRecorder(model, ys)
    t0 = time.process_time()
    if len(xs):
        Square(n_queries=QUERIES, seed=0).perturb(rec, xs, ys, EPS, bounds=(0.0, 1.0), early_stop=False)
    margins = torch.stack(rec.margins) if rec.margins else torch.zeros(QUERIES, 0)  # (queries, points)
    out = {"margins": margins, "points": int(keep.sum()), "cpu": time.process_time() - t0}
    TRACES.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def replay(margins: torch.Tensor, screen: int | None, share: float, give_up: float | None) -> tuple[int, torch.Tensor]:
    """(queries spent, (N,) broken) under the rule, from the (Q, N) recorded margins."""
    from advlab.attacks.give_up import hopeless
    best = margins.cummin(0).values  # (Q, N) best margin after each query
    q_total, n = best.shape
    broken_at = torch.where((best < 0).any(0), (best < 0).float().argmax(0), torch.full((n,), q_total))
    stop = torch.full((n,), q_total)  # the query at which each point stops being queried
    stop = torch.minimum(stop, broken_at + 1)
    active = torch.ones(n, dtype=torch.bool)
    marks = sorted({max(1, round(q_total * f)) for f in CHECKPOINTS}) if give_up else []
    events = sorted(set(marks) | ({screen} if screen else set()))
    last_q, last_m = 0, best[0].clone()
    for q in events:
        if q >= q_total:
            break
        alive = active & (broken_at >= q)
        if screen is not None and q == screen and not bool((broken_at < q).any()):
            drop = alive & ~(best[q - 1] <= share * best[0])
            stop[drop] = torch.minimum(stop[drop], torch.full_like(stop[drop], q))
            active &= ~drop
        if q in marks and not (screen is not None and bool((broken_at < q).any())):  # a break: give_up off too
            drop = alive & active & hopeless(best[q - 1], last_m, q - last_q, q_total - q, give_up)
            stop[drop] = torch.minimum(stop[drop], torch.full_like(stop[drop], q))
            active &= ~drop
            last_q, last_m = q, best[q - 1].clone()
    broken = broken_at < stop
    return int(stop.sum()), broken


RULES = [("full", None, 0.5, None), ("give_up 1, screen 1000 (standard until 2026-12-07)", 1000, 0.5, 1.0),
         ("give_up 1, screen 500", 500, 0.5, 1.0), ("give_up 1, screen 250 (standard)", 250, 0.5, 1.0),
         ("give_up 1, screen 250, share 0.7", 250, 0.7, 1.0), ("give_up 1, screen 100", 100, 0.5, 1.0),
         ("give_up 2, screen 250", 250, 0.5, 2.0), ("give_up 1, no screen", None, 0.5, 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="standard,quantize")
    parser.add_argument("--situations", default="after,alone")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--replay-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    traces = {}
    if args.replay_only:
        for f in sorted(TRACES.glob("*.pt")):
            traces[f.stem] = torch.load(f)
    else:
        import panel_models
        from advlab.data import load_dataset
        x, y = load_dataset("fashion-mnist").test_subset(args.n)
        for name in args.models.split(","):
            model = panel_models.PANEL[name][0]().eval()
            for situation in args.situations.split(","):
                traces[f"{name}-{situation}-{args.n}"] = record(name, model, x, y, situation)
                print(f"recorded {name} {situation}", flush=True)
    rows = []
    for key, t in traces.items():
        m = t["margins"]
        if m.shape[1] == 0:
            continue
        full_cost, full_broken = replay(m, None, 0.5, None)
        for label, screen, share, give_up in RULES:
            cost, broken = replay(m, screen, share, give_up)
            rows.append([key, m.shape[1], label, int(broken.sum()), f"{cost:,}", f"{cost / full_cost:.2f}",
                         int((full_broken & ~broken).sum())])
    headers = ["recording (model-situation-n)", "points", "rule", "broken", "queries", "of full", "missed"]
    text = (f"# Square's screen and give-up rules, replayed on full 5,000-query runs (Linf {EPS})\n\n"
            "Written by `benchmarks/square_screen.py` (see its docstring for how the replay works and what it "
            "assumes).\n\n" + markdown_table(headers, rows) + "\n")
    (RESULTS / "square_screen.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
