"""AC-GAN, unrestricted adversarial examples and legitimacy checks (advlab.generative)."""

import json
import math

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.generative import (ACGAN, GANConfig, UnrestrictedAttack, attack_loss, check_legitimacy,
                               discriminator_loss, generator_loss, latent_penalty, load_gan, make_tasks,
                               nearest_distances, nearest_per_class, train_gan, unrestricted_loss)
from advlab.rundir import CHECKPOINT_FILE
from advlab.plotting import tile
from advlab.rng import seeded


def tiny_gan(shape=(1, 8, 8), k=10, seed=0):
    with seeded(seed):
        return ACGAN(shape, k, latent_dim=8, width=8).eval()


def linear_model(k=10, d=64, seed=1):
    with seeded(seed):
        return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).eval()


class PixelGenerator(nn.Module):
    """A fixed generator with known reachable targets: pixel i = sigmoid(3 z_i) for the first m pixels."""

    def __init__(self, latent_dim=16, k=10):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_shape, self.bounds = latent_dim, k, (1, 8, 8), (0.0, 1.0)

    def forward(self, z, labels):
        x = torch.full((len(z), 64), 0.5)
        x = torch.cat([torch.sigmoid(3 * z), x[:, z.shape[1]:]], dim=1)
        return x.view(len(z), 1, 8, 8)


class PixelModel(nn.Module):
    """logit j = 10 * (pixel j - 0.5): class t wins when pixel t is the brightest of the first k."""

    def __init__(self, k=10):
        super().__init__()
        self.k = k

    def forward(self, x):
        return 10 * (x.flatten(1)[:, :self.k] - 0.5)


def fix_aux(gan, cls, value=20.0):
    """Make the auxiliary head say `cls` for every image (zero weights, a large bias)."""
    with torch.no_grad():
        gan.discriminator.aux.weight.zero_()
        gan.discriminator.aux.bias.zero_()
        gan.discriminator.aux.bias[cls] = value


# -- networks and losses ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_generator_and_discriminator_shapes(shape):
    gan = tiny_gan(shape, k=10)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 9])
    x = gan.generator(z, y)
    assert x.shape == (5, *shape)
    assert x.min() >= 0 and x.max() <= 1
    adv, aux = gan.discriminator(x)
    assert adv.shape == (5,) and aux.shape == (5, 10)
    # the class label changes the image
    assert not torch.allclose(gan.generator(z, y), gan.generator(z, (y + 1) % 10))


def test_generator_respects_other_bounds():
    nets = []
    for bounds in ((0.0, 1.0), (-1.0, 2.0)):
        with seeded(0):
            nets.append(ACGAN((1, 8, 8), 3, latent_dim=4, width=4, bounds=bounds).eval())
    labels = torch.zeros(50, dtype=torch.long)
    x01, x = (g.sample(labels, generator=torch.Generator().manual_seed(1)) for g in nets)
    assert torch.allclose(x, -1 + 3 * x01, atol=1e-6)  # the sigmoid spans (-1, 2), not [0, 1]


def _bce_hand(logit, label):
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def _ce_hand(logits, label):
    return -(logits[label] - math.log(sum(math.exp(v) for v in logits)))


def test_acgan_losses_match_hand_computation():
    adv_real, adv_fake = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.1])
    aux_real = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.3, 0.1]])
    aux_fake = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 3.0]])
    y_real, y_fake = torch.tensor([0, 2]), torch.tensor([1, 0])
    d = discriminator_loss(adv_real, aux_real, y_real, adv_fake, aux_fake, y_fake)
    d_real = (_bce_hand(0.5, 1) + _bce_hand(-1.0, 1)) / 2
    d_fake = (_bce_hand(2.0, 0) + _bce_hand(0.1, 0)) / 2
    a_real = (_ce_hand([1.0, 0.0, -1.0], 0) + _ce_hand([0.2, 0.3, 0.1], 2)) / 2
    a_fake = (_ce_hand([0.0, 2.0, 0.0], 1) + _ce_hand([1.0, 1.0, 3.0], 0)) / 2
    assert d["d_real"].item() == pytest.approx(d_real, rel=1e-5)
    assert d["d_fake"].item() == pytest.approx(d_fake, rel=1e-5)
    assert d["aux_real"].item() == pytest.approx(a_real, rel=1e-5)
    assert d["total"].item() == pytest.approx(d_real + d_fake + a_real + a_fake, rel=1e-5)
    g = generator_loss(adv_fake, aux_fake, y_fake)
    g_adv = (_bce_hand(2.0, 1) + _bce_hand(0.1, 1)) / 2
    assert g["g_adv"].item() == pytest.approx(g_adv, rel=1e-5)
    assert g["total"].item() == pytest.approx(g_adv + a_fake, rel=1e-5)


def test_one_step_reduces_each_players_loss_on_a_fixed_batch(digits):
    gan = tiny_gan()
    gan.train()
    gen = torch.Generator().manual_seed(0)
    x, y = digits.x_train[:64], digits.y_train[:64]
    z, y_fake = torch.randn(64, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    opt_d = torch.optim.SGD(gan.discriminator.parameters(), lr=0.05)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=1e-3)

    def d_loss():
        with torch.no_grad():
            gan.generator.eval()
            fake = gan.generator(z, y_fake)
            gan.generator.train()
        return discriminator_loss(*gan.discriminator(x), y, *gan.discriminator(fake), y_fake)["total"]

    def g_loss(training):
        gan.generator.train(training)
        return generator_loss(*gan.discriminator(gan.generator(z, y_fake)), y_fake)["total"]

    before = d_loss()
    opt_d.zero_grad()
    before.backward()
    opt_d.step()
    assert d_loss().item() < before.item() - 1e-4

    before = g_loss(True)
    opt_g.zero_grad()
    before.backward()
    opt_g.step()
    assert g_loss(True).item() < before.item() - 1e-4


# -- unrestricted attack ------------------------------------------------------------------------

def test_unrestricted_loss_terms_match_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    aux = torch.tensor([[0.3, 0.1, 0.0], [1.0, -1.0, 0.5]])
    source, target = torch.tensor([0, 1]), torch.tensor([2, -1])
    z0 = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    z = torch.tensor([[0.05, -0.3, 0.2, 0.0], [1.5, 0.9, 1.0, 0.0]])
    t = unrestricted_loss(logits, aux, source, target, z, z0, lambda1=3.0, lambda2=0.5, latent_eps=0.1)
    # example 0, targeted at class 2: -log softmax(logits)[2]
    l0_a = _ce_hand([2.0, 0.5, -1.0], 2)
    # example 1, untargeted from class 1: -log(1 - p_1)
    e = [math.exp(v) for v in [0.0, 1.0, 3.0]]
    l0_b = -math.log(1 - e[1] / sum(e))
    lat_a = (0 + 0.2 + 0.1 + 0) / 4
    lat_b = (0.4 + 0 + 0 + 0.9) / 4
    aux_a, aux_b = _ce_hand([0.3, 0.1, 0.0], 0), _ce_hand([1.0, -1.0, 0.5], 1)
    assert t["attack"].tolist() == pytest.approx([l0_a, l0_b], rel=1e-5)
    assert t["latent"].tolist() == pytest.approx([lat_a, lat_b], rel=1e-5)
    assert t["aux"].tolist() == pytest.approx([aux_a, aux_b], rel=1e-5)
    assert t["total"].tolist() == pytest.approx([l0_a + 3 * lat_a + 0.5 * aux_a, l0_b + 3 * lat_b + 0.5 * aux_b],
                                                rel=1e-5)
    assert latent_penalty(z, z0).tolist() == pytest.approx([(0.05 + 0.3 + 0.2) / 4, (0.5 + 0.1 + 1.0) / 4])
    # untargeted loss is stable when p_s is ~1
    assert torch.isfinite(attack_loss(torch.tensor([[50.0, -50.0]]), torch.tensor([0]), torch.tensor([-1]))).all()


def test_attack_reaches_targets_and_flags_agree_with_the_models():
    gan, model = tiny_gan(), PixelModel()
    gan.generator = PixelGenerator()
    fix_aux(gan, 3)
    source = torch.full((40,), 3)
    target = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, -1] * 4)
    attack = UnrestrictedAttack(steps=150, lr=0.1, lambda1=0.0, lambda2=1.0, latent_eps=0.0, seed=0)
    r = attack(gan, model, source, target)
    assert r.x.shape == (40, 1, 8, 8) and r.z.shape == (40, 16)
    with torch.no_grad():
        pred = model(r.x).argmax(1)
        aux_pred = gan.aux_classifier()(r.x).argmax(1)
        # the returned image is the generator's image of the returned latent code
        assert torch.allclose(gan.generator(r.z, source), r.x, atol=1e-5)
        assert torch.allclose(gan.generator(r.z0, source), r.x0, atol=1e-6)
    expected = torch.where(target >= 0, pred == target, pred != source) & (aux_pred == source)
    assert torch.equal(r.success, expected) and torch.equal(r.pred, pred)
    assert r.success.all(), r.success  # every target is reachable by construction
    assert ((r.steps >= 0) == r.success).all()
    s = r.summary()
    assert s["success_rate"] == pytest.approx(r.success.float().mean().item())


def test_auxiliary_classifier_must_still_say_source():
    gan, model = tiny_gan(), linear_model()
    fix_aux(gan, 5)  # the AC-GAN's classifier sees class 5 whatever the image
    r = UnrestrictedAttack(steps=30, lr=0.1, lambda1=0.0, lambda2=0.0)(gan, model, torch.full((8,), 3))
    assert not r.success.any()
    assert (r.steps == -1).all()


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_latent_radius_and_noise_bound_are_obeyed(noise):
    gan, model = tiny_gan(), linear_model()
    fix_aux(gan, 2)
    source = torch.full((16,), 2)
    target = torch.arange(16) % 10
    target[target == 2] = -1
    r = UnrestrictedAttack(steps=60, lr=0.2, lambda1=0.0, lambda2=0.0, latent_radius=0.25, noise=noise)(
        gan, model, source, target)
    assert ((r.z - r.z0).abs().amax(1) <= 0.25 + 1e-6).all()
    assert r.latent_linf.max() > 0.2  # the attack used its room
    with torch.no_grad():
        clean = gan.generator(r.z, source)
    gap = (r.x - clean).abs().amax()
    assert gap <= noise + 1e-6
    assert r.x.min() >= 0 and r.x.max() <= 1


def test_latent_penalty_keeps_codes_closer():
    gan, model = tiny_gan(), linear_model()
    fix_aux(gan, 1)
    source, target = torch.full((10,), 1), torch.full((10,), 7)
    free = UnrestrictedAttack(steps=40, lr=0.1, lambda1=0.0, lambda2=0.0)(gan, model, source, target)
    tied = UnrestrictedAttack(steps=40, lr=0.1, lambda1=1000.0, lambda2=0.0, latent_eps=0.0)(gan, model, source, target)
    # compare where neither stopped early at its first success
    both = (free.steps == -1) & (tied.steps == -1)
    assert both.any()
    assert (tied.latent_l2[both] < free.latent_l2[both]).all()


@pytest.mark.parametrize("kwargs, call, message", [
    (dict(steps=0), {}, "steps"),
    (dict(lambda1=-1.0), {}, "lambda1"),
    (dict(latent_radius=0.0), {}, "latent_radius"),
    (dict(noise=float("nan")), {}, "noise"),
    ({}, dict(source=torch.tensor([10])), "source classes"),
    ({}, dict(source=torch.tensor([1]), target=torch.tensor([1])), "equals its source"),
    ({}, dict(source=torch.tensor([1, 2]), z0=torch.zeros(2, 3)), "z0 must have shape"),
    ({}, dict(source=torch.tensor([1]), model=linear_model(k=4)), "classes"),
    ({}, dict(source=torch.tensor([1]), model=linear_model(d=784)), "cannot take"),
])
def test_attack_rejects_bad_input(kwargs, call, message):
    gan = tiny_gan()
    with pytest.raises(AdvlabError, match=message):
        attack = UnrestrictedAttack(steps=kwargs.pop("steps", 2), **kwargs)
        model = call.pop("model", linear_model())
        attack(gan, model, **call)


def test_make_tasks():
    s, t = make_tasks([0, 2], "all", 2, 3)
    assert s.tolist() == [0, 0, 0, 0, 2, 2, 2, 2] and t.tolist() == [1, 1, 2, 2, 0, 0, 1, 1]
    s, t = make_tasks([1], "untargeted", 3, 3)
    assert t.tolist() == [-1, -1, -1]
    with pytest.raises(AdvlabError, match="equals source"):
        make_tasks([1], 1, 2, 3)


# -- legitimacy ---------------------------------------------------------------------------------

def test_nearest_distances_match_brute_force():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.rand(37, 1, 5, 5, generator=g), torch.rand(203, 1, 5, 5, generator=g)
    y_ref = torch.randint(0, 4, (203,), generator=g)
    dist, idx = nearest_distances(x, ref, chunk=7)
    brute = torch.tensor([[float(((a - b) ** 2).sum().sqrt()) for b in ref] for a in x])
    assert torch.equal(idx, brute.argmin(1))
    assert torch.allclose(dist, brute.min(1).values, atol=1e-5)
    per, index = nearest_per_class(x, ref, y_ref, 5, chunk=10)
    for c in range(4):
        cols = torch.nonzero(y_ref == c).flatten()
        assert torch.allclose(per[:, c], brute[:, cols].min(1).values, atol=1e-5)
        assert torch.equal(index[:, c], cols[brute[:, cols].argmin(1)])
    assert torch.isinf(per[:, 4]).all() and (index[:, 4] == -1).all()  # a class without reference images


class FixedJudge(nn.Module):
    def __init__(self, labels, k):
        super().__init__()
        self.labels, self.k = labels, k

    def forward(self, x):
        return nn.functional.one_hot(self.labels[:len(x)], self.k).float()


def test_legitimacy_on_a_hand_made_case():
    # real images: class 0 is all zeros, class 1 all ones (2x2 images, 4 pixels)
    x_ref = torch.cat([torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)])
    y_ref = torch.tensor([0, 0, 0, 1, 1, 1])
    x = torch.stack([torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), 0.9), torch.full((1, 2, 2), 0.4),
                     torch.full((1, 2, 2), 0.1)])
    source = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([1, 1, 1, 0])
    success = torch.tensor([True, True, True, False])
    judge = FixedJudge(torch.tensor([0, 1, 0, 0]), 2)
    lg = check_legitimacy(x, source, pred, success, judge, x_ref, y_ref, 2)
    assert lg.dist_source.tolist() == pytest.approx([0.4, 1.8, 0.8, 0.2])      # 2 * value (4 pixels)
    assert lg.dist_predicted.tolist() == pytest.approx([1.6, 0.2, 1.2, 0.2])
    assert lg.closer_to_predicted.tolist() == [False, True, False, False]
    assert lg.passes.tolist() == [True, False, True, False]
    assert lg.nearest_predicted[0].item() in (3, 4, 5)
    s = lg.summary(source, pred, success)
    assert s["n_successful"] == 3
    assert s["pass_fraction"] == pytest.approx(2 / 3)
    assert s["judge_agrees_source"] == pytest.approx(2 / 3)
    assert s["closer_to_predicted"] == pytest.approx(1 / 3)
    assert s["pass_rate_of_all"] == pytest.approx(0.5)
    with pytest.raises(AdvlabError, match="shape"):
        check_legitimacy(torch.zeros(4, 1, 3, 3), source, pred, success, judge, x_ref, y_ref, 2)
    with pytest.raises(AdvlabError, match="NaN"):
        check_legitimacy(torch.full_like(x, float("nan")), source, pred, success, judge, x_ref, y_ref, 2)


# -- training runs, checkpoints, CLI ------------------------------------------------------------

def test_tile_layout():
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1)
    t = tile(x, 2, 3, pad=1, fill=-1)
    assert t.shape == (1, 3, 5)
    assert t[0, 0, ::2].tolist() == [0, 1, 2] and t[0, 2, ::2].tolist() == [3, 4, 5] and (t[0, 1] == -1).all()


def test_checkpoint_round_trip_and_resume_matches_uninterrupted(tmp_path):
    cfg = dict(batch_size=32, latent_dim=4, width=4, seed=1)
    common = dict(subset=96, progress=False, grids=False)
    full = train_gan("digits", tmp_path / "full", GANConfig(epochs=2, **cfg), **common)
    train_gan("digits", tmp_path / "part", GANConfig(epochs=1, **cfg), **common)
    resumed = train_gan("digits", tmp_path / "part", GANConfig(epochs=2, **cfg), resume=True, **common)
    assert full["epochs"] == resumed["epochs"] == 2
    a, card = load_gan(tmp_path / "full")
    b, _ = load_gan(tmp_path / "part")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert card["kind"] == "acgan" and card["epochs"] == 2 and len(card["metrics"]["history"]) == 2
    assert (tmp_path / "full" / CHECKPOINT_FILE).is_file()
    # a resumed run must use the same settings
    with pytest.raises(AdvlabError, match="different settings"):
        train_gan("digits", tmp_path / "part", GANConfig(epochs=3, **{**cfg, "width": 8}), resume=True, **common)
    with pytest.raises(AdvlabError, match="already holds a run"):
        train_gan("digits", tmp_path / "part", GANConfig(epochs=1, **cfg), **common)
    with pytest.raises(AdvlabError, match="nothing to resume"):
        train_gan("digits", tmp_path / "none", GANConfig(epochs=1, **cfg), resume=True, **common)


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "epochs"), (dict(lr=-1.0), "lr"), (dict(batch_size=2.5), "batch_size"),
])
def test_gan_config_rejects_bad_values(kwargs, message):
    with pytest.raises(AdvlabError, match=message):
        GANConfig(**kwargs)


def test_bad_image_shapes_are_rejected():
    with pytest.raises(AdvlabError, match="square"):
        ACGAN((1, 7, 7), 10)
    with pytest.raises(AdvlabError, match="square"):
        ACGAN((64,), 10)


def test_a_classifier_trained_on_other_data_is_refused():
    """runs.check_same_data: the judge of train_gan and the classifiers of `advlab generate attack`."""
    from types import SimpleNamespace

    from advlab.runs import check_same_data

    card = {"dataset": {"name": "mnist", "input_shape": [1, 28, 28], "num_classes": 10}}
    check_same_data(card, SimpleNamespace(name="fashion-mnist", input_shape=(1, 28, 28), num_classes=10), "judge")
    with pytest.raises(AdvlabError, match=r"judge was trained on mnist \(input shape \[1, 28, 28\], 10 classes\), "
                                          r"which does not match digits \[1, 8, 8\]"):
        check_same_data(card, SimpleNamespace(name="digits", input_shape=(1, 8, 8), num_classes=10), "judge")


def test_cli_train_errors_name_flags(tmp_path, capsys):
    """train_gan's errors name parameters (`batch_size`, `resume=True`); `advlab generate train` says the flags."""
    from advlab.cli import main

    base = ["generate", "train", "--dataset", "digits", "--epochs", "1", "--width", "4", "--latent-dim", "4",
            "--no-progress"]
    assert main([*base, "--subset", "16", "--batch-size", "64", "--out", str(tmp_path / "small")]) == 2
    assert "lower --batch-size or use more data" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "card.json").write_text("{}")
    assert main([*base, "--out", str(tmp_path / "taken")]) == 2
    assert "pass --resume to continue it, --overwrite to replace it, or choose another --out" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "run without --resume to start" in capsys.readouterr().err
    with pytest.raises(AdvlabError, match="lower `batch_size`"):
        train_gan("digits", tmp_path / "small2", GANConfig(epochs=1, batch_size=64), subset=16, progress=False)


def test_cli_train_sample_attack(tmp_path, capsys):
    from advlab.cli import main

    gan_dir, clf, judge = tmp_path / "gan", tmp_path / "clf", tmp_path / "judge"
    assert main(["generate", "train", "--dataset", "digits", "--epochs", "1", "--subset", "128", "--width", "4",
                 "--latent-dim", "4", "--batch-size", "32", "--out", str(gan_dir), "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["epochs"] == 1 and record["n_train"] == 128
    assert (gan_dir / "figures" / "samples-epoch001.png").is_file() and (gan_dir / "figures" / "samples.png").is_file()
    for out, model in ((clf, "softmax"), (judge, "mlp")):
        assert main(["train", "--dataset", "digits", "--model", model, "--epochs", "1", "--out", str(out),
                     "--no-progress", "--json"]) == 0
    capsys.readouterr()
    assert main(["generate", "sample", "--gan", str(gan_dir), "--judge", str(judge), "--n-per-class", "5",
                 "--json", "--out", str(tmp_path / "s")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["judge_accuracy_per_class"]) == 10 and 0 <= record["judge_accuracy"] <= 1
    assert (tmp_path / "s" / "quality.png").is_file()
    assert main(["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--judge", str(judge),
                 "--source", "1,2", "--target", "all", "--n", "1", "--steps", "5", "--out", str(tmp_path / "a"),
                 "--save", "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n"] == 18 and 0 <= record["success_rate"] <= 1
    assert set(record["legitimacy"]) >= {"pass_fraction", "judge_agrees_source", "closer_to_predicted"}
    assert record["legitimacy_unattacked"]["n_successful"] == record["legitimacy"]["n_successful"]
    assert (tmp_path / "a" / "examples.png").is_file() and (tmp_path / "a" / "examples.safetensors").is_file()
    assert json.loads((tmp_path / "a" / "unrestricted.json").read_text())["n"] == 18

    # the default output goes under the GAN run, where `advlab report` finds it
    assert main(["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--source", "0", "--n", "2",
                 "--steps", "3", "--no-progress"]) == 0
    assert (gan_dir / "attacks" / "clf-untargeted" / "unrestricted.json").is_file()
    capsys.readouterr()
    from advlab.report import build_report
    html = build_report(tmp_path).read_text()
    assert "Unrestricted adversarial examples from an AC-GAN" in html and "clf-untargeted" in html

    bad = [
        (["generate", "attack", "--gan", str(clf), "--model", str(clf)], "not an AC-GAN"),
        (["generate", "attack", "--gan", str(gan_dir), "--model", str(gan_dir)], "is an AC-GAN run"),
        (["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--source", "12"], "--source"),
        (["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--source", "3", "--target", "3"],
         "equals source"),
        (["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--target", "x"], "--target"),
        (["generate", "attack", "--gan", str(gan_dir), "--model", str(clf), "--noise", "nan"], "noise"),
        (["attack", "--run", str(gan_dir), "--attack", "pgd", "--eps", "0.1"], "AC-GAN"),
        (["generate", "train", "--dataset", "digits", "--out", str(gan_dir)], "already holds"),
    ]
    for argv, message in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_example_grid_prefers_successes_the_attack_caused():
    from types import SimpleNamespace

    from advlab.generative.figures import pick_examples
    r = SimpleNamespace(source=torch.tensor([0, 0, 0, 1, 1]), pred0=torch.tensor([2, 0, 0, 1, 1]),
                        success=torch.tensor([True, True, False, False, True]))
    # class 0: index 1 (model was right before) beats index 0; class 1: index 4; then the rest
    assert pick_examples(r, limit=5) == [1, 4, 0, 2, 3]
    assert pick_examples(r, limit=2) == [1, 4]
