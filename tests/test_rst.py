"""Robust self-training: pseudo-labels come from the standard teacher; joint and alternating variants."""

import torch

from advlab import load_run, rng
from advlab.data import holdout_split
from advlab.defenses.registry import build_defense
from advlab.defenses.rst import pseudo_label, robust_self_training
from advlab.defenses.run import train_run
from advlab.defenses.training import TrainConfig
from advlab.models import build_model
from advlab.predict import predict_logits


def quiet(msg):
    pass


def _setup(digits, labels=150):
    split = holdout_split(digits.x_train, digits.y_train, val=100, pool=len(digits.y_train) - 100 - labels, seed=0)
    mean, std = digits.channel_stats()
    teachers = []

    def make():
        with rng.seeded(0):
            net = build_model("mlp", digits.input_shape, 10, {"mean": mean, "std": std}, hidden=[32])
        teachers.append(net)
        return net
    return split, make, teachers


def test_pseudo_labels_are_the_standard_models_predictions(digits):
    split, make, teachers = _setup(digits)
    settings = build_defense("rst", eps=0.1, labels=150, base="fgsm-rs", check=False, teacher_epochs=10,
                             bounds=digits.bounds)
    student = make()
    out = robust_self_training(student, make, settings, split.x_train, split.y_train, split.x_pool, split.x_val,
                               split.y_val, TrainConfig(epochs=1, batch_size=32, lr=3e-3), y_pool=split.y_pool,
                               progress=False, log=quiet)
    teacher = teachers[-1]
    assert teacher is not student
    assert torch.equal(out.pseudo_labels, predict_logits(teacher, split.x_pool).argmax(1))
    assert torch.equal(out.pseudo_labels, pseudo_label(teacher, split.x_pool))
    # A 10-epoch teacher on 150 labels is imperfect, so these are its labels, not the true ones.
    acc = (out.pseudo_labels == split.y_pool).float().mean().item()
    assert 0.5 < acc < 1 and out.info["pseudo_label_accuracy"] == acc
    assert out.info["n_pool"] == len(split.x_pool) == len(digits.y_train) - 250
    assert out.result.epochs_run == 1


def test_alternating_variant_switches_data_objective_and_learning_rate(digits):
    split, make, _ = _setup(digits)
    settings = build_defense("rst", eps=0.1, labels=150, base="pgd", steps=2, variant="alternate", pool_lr=0.1,
                             teacher_epochs=2, bounds=digits.bounds)
    seen = []
    base = settings.objective

    def spy(model, x, y, g):
        seen.append(("adv", len(y)))
        return base(model, x, y, g)
    settings.objective = spy
    import advlab.defenses.rst as rst_mod
    original = rst_mod.clean_objective

    def clean_spy(model, x, y, g):
        seen.append(("clean", len(y)))
        return original(model, x, y, g)
    rst_mod.clean_objective = clean_spy
    try:
        robust_self_training(make(), make, settings, split.x_train, split.y_train, split.x_pool, split.x_val,
                             split.y_val, TrainConfig(epochs=2, batch_size=1000), progress=False, log=quiet)
    finally:
        rst_mod.clean_objective = original
    # Teacher: 2 clean epochs on 150 labels; robust stage: a clean epoch on the labels, then an
    # adversarial epoch on the pool.
    assert seen == [("clean", 150)] * 2 + [("clean", 150)] + \
        [("adv", n) for n in [1000, len(split.x_pool) - 1000]]


def test_rst_run_directory_and_control_without_the_pool(tmp_path):
    common = dict(config=TrainConfig(epochs=1, batch_size=64), progress=False, log=quiet,
                  model_kwargs={"hidden": [32]})
    train_run("digits", "mlp", tmp_path / "rst", defense="rst",
              defense_kwargs={"eps": 0.1, "labels": 200, "base": "fgsm-rs", "teacher_epochs": 2}, **common)
    _, card = load_run(tmp_path / "rst")
    info = card["metrics"]["rst"]
    assert info["n_labelled"] == 200 and info["n_pool"] > 1000 and 0 < info["pseudo_label_accuracy"] <= 1
    teacher, tcard = load_run(tmp_path / "rst" / "teacher")
    assert tcard["role"] == "rst teacher"
    train_run("digits", "mlp", tmp_path / "ctl", defense="rst",
              defense_kwargs={"eps": 0.1, "labels": 200, "base": "fgsm-rs", "use_pool": False}, **common)
    _, card = load_run(tmp_path / "ctl")
    assert card["metrics"]["rst"] == {"n_labelled": 200, "n_pool": 0}
    assert not (tmp_path / "ctl" / "teacher").exists()
