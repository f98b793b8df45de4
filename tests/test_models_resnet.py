"""The residual networks of the model zoo: preact-resnet18, resnet18, wrn (advlab/models/resnet.py)."""

import json

import pytest
import torch

from advlab import load_run
from advlab.cli import main
from advlab.defenses import TrainConfig, train_run
from advlab.errors import AdvlabError
from advlab.models import PreActResNet18, ResNet18, WideResNet, build_model, model_spec
from advlab.runs import save_run

# Tiny versions for everything but the parameter counts: a few milliseconds per forward pass.
TINY = {"resnet18": {"width": 4}, "preact-resnet18": {"width": 4}, "wrn": {"depth": 10, "width": 1}}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# The published networks, 10 classes, 3x32x32 inputs. Worked out by hand (k = 3x3 conv weights,
# BN = 2 per channel, no conv biases), not read off our own output:
# - ResNet-18 (kuangliu/pytorch-cifar): stem 3*64*9 + BN 128 = 1,856; stage 1: 2 x (2 x (36,864 + 128)) =
#   147,968; stages 2-4 first block = two convs + two BNs + 1x1 projection with BN: 230,144, 919,040,
#   3,673,088; their second blocks 295,424, 1,180,672, 4,720,640; linear 5,130: 11,173,962.
# - PreAct-ResNet-18 as Wong et al. 2020 and Rice et al. 2020 define it (fast_adversarial/CIFAR10/
#   preact_resnet.py, robust_overfitting/preactresnet.py): stem conv 1,728 (no BN); stage 1 147,968;
#   stages 2-4 first block (BN on the block input, projections without BN) 229,760, 918,272,
#   3,671,552, second blocks as above; the final BN(512) 1,024; linear 5,130: 11,172,170. The
#   figure 11,171,146 often quoted is kuangliu's PreActResNet18, which has no final BN-ReLU
#   (11,172,170 - 1,024); the brief asks for the final BN-ReLU, as in Wong's and Rice's code.
# - WRN-28-10 (TRADES, Madry's CIFAR challenge): 36,479,194; WRN-34-10 (TRADES): 46,160,474
#   (each extra block per stage adds 461,440 + 1,844,480 + 7,375,360 = 9,681,280).
@pytest.mark.parametrize("name, kwargs, expected", [
    ("resnet18", {}, 11_173_962),
    ("preact-resnet18", {}, 11_172_170),
    ("wrn", {}, 36_479_194),
    ("wrn", {"depth": 34}, 46_160_474),
])
def test_parameter_counts_match_the_published_networks(name, kwargs, expected):
    assert n_params(build_model(name, (3, 32, 32), 10, **kwargs)) == expected


def test_preact_has_the_final_bn_relu_and_a_bare_stem():
    m = PreActResNet18((3, 32, 32), 10)
    assert isinstance(m.stem, torch.nn.Conv2d)  # no BN-ReLU before the first block
    assert isinstance(m.head[0], torch.nn.BatchNorm2d) and m.head[0].num_features == 512
    # without that BN the count is the 11,171,146 of kuangliu's PreActResNet18
    assert n_params(m) - 2 * 512 == 11_171_146


def test_default_widths_and_depths_are_the_published_ones():
    r = ResNet18((3, 32, 32), 10)
    assert [s[0].conv1.out_channels for s in r.stages] == [64, 128, 256, 512]
    assert [len(s) for s in r.stages] == [2, 2, 2, 2]
    assert r.stem[0].stride == (1, 1) and not any(isinstance(m, torch.nn.MaxPool2d) for m in r.modules())
    w = WideResNet((3, 32, 32), 10, depth=34)
    assert [len(s) for s in w.stages] == [5, 5, 5] and [s[0].conv1.out_channels for s in w.stages] == [160, 320, 640]


@pytest.mark.parametrize("name", ["resnet18", "preact-resnet18", "wrn"])
def test_stages_halve_the_spatial_size(name):
    model = build_model(name, (3, 32, 32), 10, **TINY[name])
    sizes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda mod, inp, out: sizes.append(tuple(out.shape[-2:])))
    model(torch.rand(2, 3, 32, 32))
    assert sizes == ([(32, 32), (16, 16), (8, 8), (4, 4)] if name != "wrn" else [(32, 32), (16, 16), (8, 8)])


@pytest.mark.parametrize("name", ["resnet18", "preact-resnet18", "wrn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_output_shapes_for_image_and_flat_input(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, **TINY[name]).eval()
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert torch.equal(model(x.flatten(1)), out)  # (N, C*H*W) is the same images
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "preact-resnet18", "wrn"])
def test_non_image_input_is_refused(name):
    with pytest.raises(AdvlabError, match="image input"):
        build_model(name, (64,), 10)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 27}, "6n \\+ 4"), ({"depth": 4}, "6n \\+ 4"), ({"depth": 28.0}, "6n \\+ 4"),
    ({"width": 0}, "width"), ({"dropout": 1.5}, "dropout"), ({"widen_factor": 10}, "no option widen_factor"),
])
def test_bad_wrn_options_are_clear_errors(kwargs, match):
    with pytest.raises(AdvlabError, match=match):
        build_model("wrn", (3, 32, 32), 10, **kwargs)


def test_bad_resnet_width_is_a_clear_error():
    with pytest.raises(AdvlabError, match="width must be an integer >= 1"):
        build_model("resnet18", (3, 32, 32), 10, width=-8)
    with pytest.raises(AdvlabError, match="no option depth"):
        build_model("preact-resnet18", (3, 32, 32), 10, depth=34)


def test_wrn_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    m = build_model("wrn", (1, 8, 8), 10, depth=10, width=1, dropout=0.5)
    x = torch.rand(8, 1, 8, 8)
    m.train()
    assert not torch.allclose(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("name", ["resnet18", "preact-resnet18", "wrn"])
def test_save_and_load_run_give_identical_logits(name, tmp_path):
    torch.manual_seed(0)
    norm = {"mean": [0.3], "std": [0.2]}
    model = build_model(name, (1, 8, 8), 10, norm, **TINY[name])
    model.train()
    model(torch.rand(16, 1, 8, 8))  # moves the BN running statistics off their initial values
    model.eval()
    save_run(tmp_path, model, {"model": model_spec(name, (1, 8, 8), 10, norm, **TINY[name])})
    loaded, card = load_run(tmp_path)
    x = torch.rand(5, 1, 8, 8)
    assert card["model"]["name"] == name and card["model"]["kwargs"] == TINY[name]
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_tiny_resnet18_learns_digits(tmp_path):
    # chance is 0.1; three epochs of a width-8 ResNet-18 reach ~0.94 in about 3 s on 2 cores
    record = train_run("digits", "resnet18", tmp_path / "run", config=TrainConfig(epochs=3, lr=3e-3, batch_size=64),
                       model_kwargs={"width": 8}, progress=False)
    assert record["test_accuracy"] > 0.8
    model, card = load_run(tmp_path / "run")
    assert isinstance(model.net, ResNet18) and card["model"]["kwargs"] == {"width": 8}


def test_cli_trains_a_tiny_preact_resnet(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--model", "preact-resnet18", "--model-arg", "width=8",
                 "--epochs", "3", "--batch-size", "64", "--out", str(tmp_path / "run"), "--json", "--no-progress"])
    assert code in (0, None)
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "preact-resnet18" and record["test_accuracy"] > 0.8
