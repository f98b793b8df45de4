"""Fingerprints of every attack and the fast and standard suites on a small fixed model: a refactoring of the
attack machinery must leave every line unchanged (bit-identical examples, logits, distances and pass counts).

    PYTHONPATH=. python benchmarks/fingerprint.py > before.txt   # on the old commit
    PYTHONPATH=. python benchmarks/fingerprint.py > after.txt    # on the new one; diff before.txt after.txt

A seeded SmallCNN trained for a few epochs on the bundled digits (cached in $TMPDIR by the hash of its
recipe, so both sides attack the same weights), 48 test points, two budgets; small batches so that
batching and the CPU padding take part. One thread, so that the CPU's sums are reproducible.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from advlab.attacks import build_attack  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from advlab.attacks.registry import ATTACKS  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.evaluate.robust import evaluate_robustness  # noqa: E402
from advlab.evaluate.suites import get_suite  # noqa: E402
from advlab.io import save_tensors  # noqa: E402
from advlab.models.cnn import SmallCNN  # noqa: E402

N = 48
EPS = {"linf": [0.05, 0.15], "l2": [0.3, 1.0], "l1": [1.0, 3.0]}
# Fast options for every attack (the defaults of the long ones cost minutes on the CPU).
OPTIONS = {
    "fgsm": {}, "bim": {"steps": 5}, "pgd": {"steps": 8, "restarts": 2}, "mifgsm": {"steps": 5},
    "apgd-ce": {"steps": 10}, "apgd-t": {"steps": 8, "n_target_classes": 2}, "cw": {"steps": 20, "binary_search_steps": 3},
    "deepfool": {"steps": 10}, "square": {"n_queries": 60}, "highconf": {"steps": 8},
    "spatial": {"rotations": 5, "shifts": 3}, "fooling": {"steps": 10, "per_class": 1},
}


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        if isinstance(t, dict):
            h.update(repr(sorted((k, v) for k, v in t.items() if not isinstance(v, torch.Tensor))).encode())
            for k in sorted(t):
                if isinstance(t[k], torch.Tensor):
                    h.update(k.encode())
                    h.update(t[k].detach().cpu().contiguous().numpy().tobytes())
            continue
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class SmallMemory(torch.nn.Module):
    """Runs out of 'device memory' on batches above `limit` rows, like a GPU would."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} rows")
        return self.net(x)


def model_and_data():
    ds = load_dataset("digits")
    x, y = ds.x_test[:N].float(), ds.y_test[:N].long()
    cache = Path(tempfile.gettempdir()) / "advlab-fingerprint-cnn-v1.pt"
    torch.manual_seed(0)
    model = SmallCNN((1, 8, 8), 10, width=1, hidden=32)
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
    else:
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xt, yt = ds.x_train.float(), ds.y_train.long()
        for _ in range(6):
            perm = torch.randperm(len(xt), generator=g)
            for i in range(0, len(xt), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
        torch.save(model.state_dict(), cache)
    model.eval()
    return model, x, y, ds.bounds


def line(label: str, r) -> None:
    print(f"{label:38s} x_adv {digest(r.x_adv)} logits {digest(r.logits, r.clean_logits)} "
          f"dist {digest(r.distances, r.min_distance)} goal {digest(r.goal)} info {digest(r.info)} "
          f"passes {r.passes} eps {r.eps} robust {[round(a, 4) for a in r.robust_accuracy()]}")


def main() -> None:
    warnings.simplefilter("ignore")
    model, x, y, bounds = model_and_data()
    print("model", digest(*model.state_dict().values()), "clean", (model(x).argmax(1) == y).float().mean().item())
    for name in ATTACKS:
        norms = ["linf", "l2"] if name not in ("spatial",) else [None]
        if name in ("pgd",):
            norms.append("l1")
        for norm in norms:
            opts = dict(OPTIONS[name], batch_size=20, seed=3)
            if norm is not None:
                opts["norm"] = norm
            eps = EPS[norm or "linf"] if name != "spatial" else [0.5, 1.0]
            if name in ("apgd-t", "square", "apgd-ce") and norm == "l1":
                continue
            try:
                attack = build_attack(name, **opts)
            except AdvlabError:  # e.g. cw is L2 only
                continue
            line(f"{name} {norm}", attack(model, x, y, eps, bounds=bounds))
            if name not in ("spatial", "fooling"):
                line(f"{name} {norm} seed=7", attack(model, x, y, eps[:1], bounds=bounds, seed=7))
                if name not in ("cw", "deepfool"):
                    xa = attack.perturb(model, x, y, eps[1], bounds=bounds,
                                        generator=torch.Generator().manual_seed(5))
                    print(f"{name + ' ' + str(norm) + ' perturb':38s} x_adv {digest(xa)}")
    # Per-example budgets, a budget 0 and an unbounded one, targeted, unbounded features.
    per = torch.linspace(0.0, 0.2, N)
    line("pgd per-example", build_attack("pgd", steps=5, batch_size=16)(model, x, y, [per, 0.1], bounds=bounds))
    line("pgd 0 and inf", build_attack("pgd", steps=5)(model, x, y, [0.0, math.inf], bounds=bounds))
    line("apgd-ce inf", build_attack("apgd-ce", steps=5)(model, x, y, [math.inf], bounds=bounds))
    targets = (y + 1) % 10
    line("pgd targeted", build_attack("pgd", steps=6, targeted=True)(model, x, y, [0.1, 0.3], bounds=bounds,
                                                                     targets=targets))
    line("pgd unbounded", build_attack("pgd", steps=5)(model, x, y, [0.1], bounds=None))
    line("deepfool eps 1 scalar", build_attack("deepfool", steps=10, norm="l2")(model, x, y, 1.0, bounds=bounds))
    # An attack outside the registry: PGD in an embedding ball (advlab.metric).
    from advlab.metric.embedding_threat import EmbeddingPGD
    torch.manual_seed(1)
    embedding = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))
    line("embedding-pgd", EmbeddingPGD(embedding, steps=5, batch_size=20)(model, x, y, [0.0, 0.1, 0.6], bounds=bounds))
    # Out of "device memory" above 14 rows: the batch is halved (48 -> 24 -> 12) and the fit kept.
    small = SmallMemory(model, 14)
    line("pgd oom", build_attack("pgd", steps=5, batch_size=48)(small, x, y, [0.05, 0.15], bounds=bounds))
    line("deepfool oom", build_attack("deepfool", steps=5, batch_size=48)(small, x, y, [0.05, 0.15], bounds=bounds))
    ev = evaluate_robustness(small, x, y, [0.05, 0.15], get_suite("fast"), bounds=bounds, seed=2, batch_size=40,
                             progress=False)
    print(f"{'evaluate fast oom':38s} x_adv {digest(ev.x_adv)} logits {digest(ev.logits, ev.clean_logits)} "
          f"broken_by {digest(ev.broken_by)} passes {ev.passes} robust {ev.robust_accuracy()} oom {ev.oom_batch_sizes}")
    # The suites, with a recorded source first.
    with tempfile.TemporaryDirectory() as tmp:
        r = build_attack("fgsm")(model, x, y, [0.1, 0.2], bounds=bounds)
        path = Path(tmp) / "rec" / "adversarial.safetensors"
        save_tensors(path, {"x": x, "x_adv": r.x_adv, "logits": r.logits, "y": y})
        from advlab.evaluate.recorded import RecordedEntry
        rec = RecordedEntry("recorded fgsm", "recorded", {"path": str(path)})
        for suite in ("fast", "standard"):
            for norm in ("linf", "l2"):
                entries = [rec, *get_suite(suite, norm=norm)] if norm == "linf" else get_suite(suite, norm=norm)
                ev = evaluate_robustness(model, x, y, EPS[norm], entries, norm=norm, bounds=bounds, seed=1,
                                         batch_size=20, progress=False, state_dir=os.path.join(tmp, suite + norm))
                print(f"{'evaluate ' + suite + ' ' + norm:38s} x_adv {digest(ev.x_adv)} logits "
                      f"{digest(ev.logits, ev.clean_logits)} broken_by {digest(ev.broken_by)} passes {ev.passes} "
                      f"attack_passes {ev.attack_passes} robust {ev.robust_accuracy()} oom {ev.oom_batch_sizes}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
