import json

import pytest
import torch

from advlab import load_run
from advlab.defenses import TrainConfig, Trainer
from advlab.defenses.run import train_run
from advlab.defenses.training import clean_objective, learning_rate
from advlab.rundir import CHECKPOINT_FILE
from advlab.errors import AdvlabError
from advlab.models import build_model
from advlab.rng import seeded


def quiet(msg):
    pass


@pytest.mark.parametrize("model, lr, epochs, target", [("cnn-small", 3e-3, 15, 0.95), ("softmax", 1e-2, 30, 0.90)])
def test_digits_reaches_target_accuracy(tmp_path, model, lr, epochs, target):
    r = train_run("digits", model, tmp_path / "run", config=TrainConfig(epochs=epochs, lr=lr), progress=False, log=quiet)
    assert r["test_accuracy"] >= target
    net, card = load_run(tmp_path / "run")
    assert card["metrics"]["test_accuracy"] == r["test_accuracy"]
    assert card["model"]["name"] == model and card["dataset"]["name"] == "digits" and card["seed"] == 0
    assert card["versions"]["torch"] == torch.__version__


def test_checkpoint_round_trip_gives_bitwise_identical_logits(tmp_path, digits):
    train_run("digits", "mlp", tmp_path / "run", config=TrainConfig(epochs=2), progress=False, log=quiet,
              model_kwargs={"hidden": [32], "dropout": 0.2})
    a, card = load_run(tmp_path / "run")
    b, _ = load_run(tmp_path / "run")
    assert not a.training
    assert card["model"]["kwargs"] == {"hidden": [32], "dropout": 0.2}
    assert torch.equal(a(digits.x_test), b(digits.x_test))
    assert not list(tmp_path.glob("run/**/*.tmp")), "no temporary files left behind"


def _trainer(digits, run_dir, epochs=4, objective=clean_objective, seed=0):
    with seeded(seed):
        model = build_model("mlp", digits.input_shape, 10, hidden=[64], dropout=0.3)
    n = 400
    return Trainer(model, digits.x_train[:n], digits.y_train[:n], digits.x_test[:100], digits.y_test[:100],
                   config=TrainConfig(epochs=epochs, batch_size=64, seed=seed), objective=objective,
                   run_dir=run_dir, progress=False, log=quiet)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, digits):
    full = _trainer(digits, tmp_path / "full")
    full.fit()

    calls = {"n": 0}

    def interrupt_in_third_epoch(model, x, y, g):
        calls["n"] += 1
        if calls["n"] == 2 * 7 + 3:  # 7 batches per epoch: stop inside epoch 3
            raise KeyboardInterrupt
        return clean_objective(model, x, y, g)

    first = _trainer(digits, tmp_path / "cut", objective=interrupt_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    second = _trainer(digits, tmp_path / "cut")
    second.fit(resume=True)
    assert second.epoch == 4 and len(second.history) == 4
    for (k, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_refuses_different_settings(tmp_path, digits):
    _trainer(digits, tmp_path / "r", epochs=2).fit()
    with pytest.raises(AdvlabError, match="config.epochs was 2, now 3"):
        _trainer(digits, tmp_path / "r", epochs=3).fit(resume=True)
    with pytest.raises(AdvlabError, match="nothing to resume"):
        _trainer(digits, tmp_path / "none").fit(resume=True)


def test_same_seed_same_weights_different_seed_different(tmp_path, digits):
    a = _trainer(digits, None, epochs=1, seed=1)
    b = _trainer(digits, None, epochs=1, seed=1)
    c = _trainer(digits, None, epochs=1, seed=2)
    for t in (a, b, c):
        t.fit()
    wa, wb, wc = (torch.cat([p.flatten() for p in t.model.parameters()]) for t in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_early_stopping_keeps_the_best_epoch(tmp_path, digits):
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.95])

    t = _trainer(digits, tmp_path / "es", epochs=6)
    t.config.patience = 2
    t.val_metric = lambda model, x, y: next(scores)
    result = t.fit()
    assert result.stopped_early and result.epochs_run == 4 and result.best_epoch == 2


def test_one_cycle_schedule_shape():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup=0.3)
    lrs = [learning_rate(cfg, s, 1000) for s in range(1000)]
    peak = max(range(1000), key=lambda s: lrs[s])
    assert 295 <= peak <= 305 and abs(lrs[peak] - 0.1) < 1e-3
    assert lrs[0] < 0.01 and lrs[-1] < 1e-3
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_bad_training_options():
    with pytest.raises(AdvlabError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(AdvlabError, match="epochs"):
        TrainConfig(epochs=0)


def test_checkpoint_is_one_safetensors_file_without_pickle(tmp_path, digits):
    _trainer(digits, tmp_path / "r", epochs=1).fit()
    raw = (tmp_path / "r" / CHECKPOINT_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + header_len])["__metadata__"]
    assert json.loads(meta["advlab"])["epoch"] == 1
