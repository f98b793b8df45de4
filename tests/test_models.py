
import pytest
import torch

from advlab.errors import AdvlabError
from advlab.models import MODEL_NAMES, Ensemble, build_model

IMAGE = (1, 8, 8)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("flat", [False, True])
def test_every_model_maps_inputs_to_logits(name, flat):
    k = 2 if name == "logistic" else 10
    model = build_model(name, IMAGE, k)
    x = torch.rand(5, *IMAGE)
    if flat:
        x = x.flatten(1)  # (N, D) input works for every model, images included
    out = model(x)
    assert out.shape == (5, k) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()  # differentiable end to end


@pytest.mark.parametrize("name", ["logistic", "softmax", "mlp", "maxout", "rbf"])
def test_feature_models_on_vector_data(name):
    k = 2 if name == "logistic" else 3
    assert build_model(name, (7,), k)(torch.randn(4, 7)).shape == (4, k)


def test_cnns_need_images():
    with pytest.raises(AdvlabError, match="image input"):
        build_model("cnn-small", (7,), 3)


def test_logistic_is_the_sigmoid_of_a_linear_score():
    torch.manual_seed(0)
    m = build_model("logistic", (5,), 2)
    x = torch.randn(10, 5)
    z = x @ m.weight + m.bias
    assert torch.allclose(m(x).softmax(1)[:, 1], torch.sigmoid(z), atol=1e-6)
    with pytest.raises(AdvlabError, match="binary"):
        build_model("logistic", (5,), 3)


def test_maxout_default_is_the_paper_architecture():
    m = build_model("maxout", (1, 28, 28), 10, dropout=0.5)
    maxouts = [l for l in m.net if l.__class__.__name__ == "Maxout"]
    assert [(l.units, l.pieces) for l in maxouts] == [(240, 5), (240, 5)]


def test_madry_cnn_architecture():
    m = build_model("cnn-madry", (1, 28, 28), 10)
    convs = [l for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert m.classifier[0].out_features == 1024 and m.classifier[0].in_features == 64 * 7 * 7


def test_rbf_logits_are_negative_scaled_squared_distances():
    torch.manual_seed(0)
    m = build_model("rbf", (6,), 4, beta=0.7)
    x = torch.randn(3, 6)
    brute = torch.stack([-m.beta[i] * ((x - m.centers[i]) ** 2).sum(1) for i in range(4)], dim=1)
    assert torch.allclose(m(x), brute, atol=1e-5)
    assert torch.allclose(m.beta, torch.full((4,), 0.7))


def test_ensemble_averages_probabilities():
    torch.manual_seed(0)
    members = [build_model("mlp", (6,), 3) for _ in range(3)]
    x = torch.randn(5, 6)
    mean_p = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    assert torch.allclose(Ensemble(members)(x).softmax(1), mean_p, atol=1e-6)
    assert torch.allclose(Ensemble(members)(x).exp().sum(1), torch.ones(5), atol=1e-5)


def test_normalisation_lives_inside_the_model():
    torch.manual_seed(0)
    plain = build_model("softmax", IMAGE, 10)
    wrapped = build_model("softmax", IMAGE, 10, normalize={"mean": [0.5], "std": [0.25]})
    wrapped.net.load_state_dict(plain.state_dict())
    x = torch.rand(4, *IMAGE)
    assert torch.allclose(wrapped(x), plain((x - 0.5) / 0.25), atol=1e-5)
    assert torch.allclose(wrapped(x.flatten(1)), plain((x.flatten(1) - 0.5) / 0.25), atol=1e-5)


def test_unknown_model_and_option():
    with pytest.raises(AdvlabError, match="choose one of"):
        build_model("resnet", IMAGE, 10)
    with pytest.raises(AdvlabError, match="no option depth.*allowed: hidden"):
        build_model("mlp", IMAGE, 10, depth=3)
