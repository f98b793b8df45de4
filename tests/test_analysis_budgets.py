"""Per-class budget files: round trip, accepted forms, and a clear error for each kind of bad file."""

import json

import pytest
import torch

from advlab.analysis.budgets import eps_for_labels, load_eps_per_class, write_eps_per_class
from advlab.errors import AdvlabError, CorruptFileError


def write(tmp_path, obj, name="eps.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_round_trip(tmp_path):
    path = write_eps_per_class(tmp_path / "e.json", [0.1, 0.25, 0.0], norm="linf", dataset="toy",
                               classes=["a", "b", "c"], rule="by hand")
    eps = load_eps_per_class(path, 3, norm="linf")
    assert eps.dtype == torch.float32 and eps.tolist() == pytest.approx([0.1, 0.25, 0.0])
    record = json.loads(open(path).read())
    assert record["format"] == "advlab-eps-per-class" and record["eps"] == {"0": 0.1, "1": 0.25, "2": 0.0}


@pytest.mark.parametrize("content", [
    {"0": 0.1, "1": "8/255"},                 # a bare mapping, with a fraction
    {"eps": [0.1, "8/255"]},                   # a list
    {"eps": {"1": "8/255", "0": 0.1}, "norm": "linf", "classes": ["x", "y"]},
])
def test_accepted_forms(tmp_path, content):
    assert load_eps_per_class(write(tmp_path, content), 2).tolist() == pytest.approx([0.1, 8 / 255])


def test_eps_for_labels_picks_each_example_budget():
    eps = torch.tensor([0.1, 0.2, 0.3])
    y = torch.tensor([2, 0, 0, 1])
    assert eps_for_labels(eps, y).tolist() == pytest.approx([0.3, 0.1, 0.1, 0.2])
    with pytest.raises(AdvlabError, match="0..2"):
        eps_for_labels(eps, torch.tensor([0, 3]))
    with pytest.raises(AdvlabError, match="integer"):
        eps_for_labels(eps, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("content, message", [
    ({"eps": {"0": 0.1}}, "no epsilon for class 1"),
    ({"eps": {"0": 0.1, "1": 0.2, "2": 0.3}}, "class key '2'"),
    ({"eps": {"0": 0.1, "x": 0.2}}, "class key 'x'"),
    ({"eps": {"0": -0.1, "1": 0.2}}, "negative"),
    ({"eps": {"0": "nan", "1": 0.2}}, "finite"),
    ({"eps": {"0": "abc", "1": 0.2}}, "must be a number"),
    ({"eps": {"0": True, "1": 0.2}}, "must be a number"),
    ({"eps": [0.1]}, "lists 1 values"),
    ({"eps": 0.1}, "must map class index"),
    ({"eps": {"0": 0.1, "1": 0.2}, "epsilon": 3}, "unknown key 'epsilon'"),
    ({"eps": {"0": 0.1, "1": 0.2}, "format": "other"}, "format"),
    ({"eps": {"0": 0.1, "1": 0.2}, "version": 2}, "version 2"),
    ({"eps": {"0": 0.1, "1": 0.2}, "norm": "l2"}, "for norm 'l2' but the attack uses 'linf'"),
    ({"eps": {"0": 0.1, "1": 0.2}, "classes": ["a", "b", "c"]}, "lists 3 classes"),
    ({"norm": "linf"}, "missing the \"eps\""),
    ([0.1, 0.2], "expected a JSON object"),
])
def test_bad_files_get_clear_errors(tmp_path, content, message):
    with pytest.raises(AdvlabError, match=message.replace("(", r"\(")):
        load_eps_per_class(write(tmp_path, content), 2, norm="linf")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(AdvlabError, match="no such file"):
        load_eps_per_class(tmp_path / "nope.json", 2)
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_eps_per_class(write(tmp_path, "{\"eps\": {"), 2)


def test_writer_refuses_bad_budgets(tmp_path):
    with pytest.raises(AdvlabError, match="class 1"):
        write_eps_per_class(tmp_path / "e.json", [0.1, float("nan")], norm="l2")


def test_per_class_budgets_drive_an_attack(digits, tmp_path):
    from advlab import rng
    from advlab.attacks import FGSM
    from advlab.models import build_model

    path = write_eps_per_class(tmp_path / "e.json", [0.01 * (c + 1) for c in range(10)], norm="linf")
    eps = eps_for_labels(load_eps_per_class(path, digits.num_classes, norm="linf"), digits.y_test[:60])
    with rng.seeded(0):
        model = build_model("softmax", digits.input_shape, digits.num_classes).eval()
    result = FGSM("linf")(model, digits.x_test[:60], digits.y_test[:60], eps=eps, bounds=digits.bounds)
    linf = (result.x_adv[0] - digits.x_test[:60]).flatten(1).abs().amax(1)
    assert (linf <= eps + 1e-6).all()
    assert torch.allclose(linf[linf > 0], eps[linf > 0], atol=1e-6)  # FGSM uses each point's full budget
