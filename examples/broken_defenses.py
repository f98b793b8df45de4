"""Three defenses that do not work, on digits: naive PGD overrates them, the checks flag them,
the adaptive attack breaks them.

    python examples/broken_defenses.py            # about a minute on 2 CPU cores
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from advlab.data import load_dataset
from advlab.defenses import TrainConfig, Trainer
from advlab.evaluate.adaptive import broken_defenses
from advlab.models import RandomResizePad, build_model
from advlab.rng import seeded

EPS = 0.2


def train(data, augment=None):
    with seeded(0):
        model = build_model("cnn-small", data.input_shape, data.num_classes)

    def objective(m, x, y, g):
        logits = m(augment(x, g) if augment is not None else x)
        return F.cross_entropy(logits, y), logits

    Trainer(model, data.x_train, data.y_train, config=TrainConfig(epochs=15, lr=3e-3), objective=objective,
            progress=False, log=lambda msg: None).fit()
    return model.eval()


def main() -> None:
    data = load_dataset("digits")
    plain = train(data)
    augmented = train(data, augment=RandomResizePad(min_scale=0.75))
    rows = broken_defenses(plain, data.x_test, data.y_test, EPS, data.bounds, randomised_model=augmented)
    print(f"digits, {len(data.y_test)} test images, Linf eps {EPS}\n")
    print(f"{'defense':<38} {'naive':>22} {'adaptive':>34}  flagged by")
    for r in rows:
        print(f"{r['defense']:<38} {r['naive_attack']:>14} {r['naive_robust_accuracy']:.3f} "
              f"{r['adaptive_attack']:>26} {r['adaptive_robust_accuracy']:.3f}  {', '.join(r['flags']) or '-'}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
