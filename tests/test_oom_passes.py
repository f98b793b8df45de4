"""Out of device memory halves the batch; passes are counted in model rows."""

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, PGD, Square, run_attack
from advlab.evaluate import SuiteEntry, evaluate_robustness, get_suite
from advlab.predict import predict_logits


class RowCounter(torch.autograd.Function):
    """Identity whose backward counts the rows it carries: a reference independent of advlab.passes."""

    @staticmethod
    def forward(ctx, x, box):
        ctx.box = box
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.box["backward"] += len(grad)
        return grad, None


class CountingNet(nn.Module):
    def __init__(self, dim=20, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(dim, classes)
        self.box = {"forward": 0, "backward": 0}

    def forward(self, x):
        self.box["forward"] += len(x)
        out = self.lin(x)
        return RowCounter.apply(out, self.box) if out.requires_grad else out


class SmallMemory(nn.Module):
    """Runs out of 'device memory' on batches above `limit` rows, like a GPU would."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit = net, limit
        self.largest = 0

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} rows")
        self.largest = max(self.largest, len(x))
        return self.net(x)


def _data(n=64, dim=20):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, dim, generator=g)
    with torch.no_grad():
        y = CountingNet(dim).lin(x).argmax(1)  # every point starts correct: all are attacked
    return x, y


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=7, random_start=True), Square(n_queries=30)])
def test_pass_counts_match_an_independent_count(attack):
    x, y = _data()
    net = CountingNet()
    before = dict(net.box)
    result = attack(net, x, y, [0.05, 0.2], bounds=(0.0, 1.0))
    probe = 2  # the input check runs the raw model on two rows, outside the attack's own count
    assert result.passes["forward"] == net.box["forward"] - before["forward"] - probe > 0
    assert result.passes["backward"] == net.box["backward"] - before["backward"]
    if isinstance(attack, Square):
        assert result.passes["backward"] == 0
    else:
        assert result.passes["backward"] >= len(x)  # at least one gradient per point at the first budget


PGD20 = [SuiteEntry("pgd-20", "pgd", {"steps": 20})]  # the bounds below count PGD-20's passes per row


def test_evaluation_counts_its_passes_across_a_resume(tmp_path):
    x, y = _data()
    net = CountingNet()
    ev = evaluate_robustness(net, x, y, [0.05, 0.2], PGD20, bounds=(0.0, 1.0), progress=False,
                             state_dir=tmp_path / "a")
    assert ev.passes["forward"] > len(x) and ev.passes["backward"] > 0
    # interrupted after the first stage, then resumed: the total is the same
    state = tmp_path / "b"
    calls = {"n": 0}

    class Interrupting(CountingNet):
        def forward(self, x):
            calls["n"] += 1
            if calls["n"] == 40:
                raise KeyboardInterrupt
            return super().forward(x)

    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(Interrupting(), x, y, [0.05, 0.2], PGD20, bounds=(0.0, 1.0), progress=False,
                            state_dir=state)
    resumed = evaluate_robustness(CountingNet(), x, y, [0.05, 0.2], PGD20, bounds=(0.0, 1.0),
                                  progress=False, state_dir=state)
    assert resumed.robust_accuracy() == ev.robust_accuracy()
    # Nothing done before the interruption is lost; the interrupted batch (64 rows, PGD-20: at most
    # 22 forward and 20 backward passes per row) is the only work counted twice.
    for kind, per_row in (("forward", 22), ("backward", 20)):
        assert ev.passes[kind] <= resumed.passes[kind] <= ev.passes[kind] + 64 * per_row, kind
    assert resumed.passes != ev.passes  # the interruption did cost something


def test_out_of_memory_halves_the_batch_and_says_so_once(capsys):
    x, y = _data(n=96)
    reference = PGD(steps=5, batch_size=96, random_start=False)(CountingNet(), x, y, [0.1], bounds=(0.0, 1.0))
    small = SmallMemory(CountingNet(), limit=30)
    attack = PGD(steps=5, batch_size=96, random_start=False)
    result = attack(small, x, y, [0.1], bounds=(0.0, 1.0))
    assert small.largest <= 30
    assert result.info["batch_size_after_oom"] == 24  # 96 -> 48 -> 24
    err = capsys.readouterr().err
    assert err.count("out of device memory") == 2 and "going on with 24" in err
    # no random start: the chunks compute exactly what one batch would have
    assert result.robust_accuracy() == reference.robust_accuracy()
    assert torch.equal(result.x_adv, reference.x_adv)
    # the attack is left as it was; a caller that goes on passes the size that fitted back to the harness
    assert set(vars(attack)) == set(vars(PGD(steps=5, batch_size=96, random_start=False))) and attack.batch_size == 96
    again = run_attack(attack, small, x, y, [0.1], bounds=(0.0, 1.0), fitted=result.info["batch_size_after_oom"])
    assert "out of device memory" not in capsys.readouterr().err
    assert torch.equal(again.x_adv, result.x_adv) and again.info["batch_size_after_oom"] == 24


def test_out_of_memory_in_an_evaluation_is_recorded(capsys):
    x, y = _data(n=80)
    ev = evaluate_robustness(SmallMemory(CountingNet(), limit=50), x, y, [0.1], PGD20,
                             bounds=(0.0, 1.0), progress=False, batch_size=80)
    assert ev.oom_batch_sizes == {"pgd-20": 40}
    assert ev.robust_accuracy()[0] < 1.0


def test_prediction_halves_its_batch_on_out_of_memory(capsys):
    x, _ = _data(n=100)
    net = CountingNet()
    small = SmallMemory(net, limit=40)
    assert torch.equal(predict_logits(small, x, batch_size=100), predict_logits(net, x))
    assert "going on with 25" in capsys.readouterr().err


def test_a_cpu_allocation_failure_is_not_mistaken_for_device_memory():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    x, y = _data(n=8)
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        predict_logits(Broken(), x)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_counting_wrappers_leave_the_models_mode_as_they_found_it(mode, recwarn):
    """The counters wrap the model in a new Module, which starts in train mode: restoring "its" mode
    after a prediction must not switch the user's model into train mode (dropout, batch norm)."""
    from advlab.attacks import AdvlabWarning
    x, y = _data()
    net = nn.Sequential(nn.Linear(20, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    getattr(net, mode)()
    evaluate_robustness(net, x, y, [0.1], get_suite("fast"), bounds=(0.0, 1.0), progress=False)
    PGD(steps=3)(net, x, y, [0.1], bounds=(0.0, 1.0))
    assert all(m.training == (mode == "train") for m in net.modules())
    train_mode_warnings = [w for w in recwarn if issubclass(w.category, AdvlabWarning) and "train mode" in str(w.message)]
    assert bool(train_mode_warnings) == (mode == "train")


def test_training_that_runs_out_of_memory_accumulates_chunks_to_the_same_update(capsys):
    """Out of device memory in a training step: the batch is split and the chunks' gradients add up to
    the whole batch's, so the weights match an uninterrupted run (up to float summation order)."""
    from advlab.defenses import TrainConfig, Trainer
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 20, generator=g), torch.randint(0, 4, (256,), generator=g)

    def train(limit):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
        model = SmallMemory(net, limit) if limit else net
        Trainer(model, x, y, config=TrainConfig(epochs=2, batch_size=64, lr=1e-2), progress=False,
                log=lambda m: print(m)).fit()
        return net, model

    reference, _ = train(None)
    chunked, small = train(20)
    assert small.largest <= 20
    for a, b in zip(reference.parameters(), chunked.parameters()):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    out = capsys.readouterr().out
    assert out.count("out of device memory") == 2 and "going on with 16" in out  # 64 -> 32 -> 16, said once each
