"""The records `--json` prints are typed (advlab.records) without changing a byte: the TypedDicts are plain
dicts at run time, and the writers put the keys in the order the types declare them (docs/records.md)."""
from __future__ import annotations

import json
from typing import get_type_hints

import pytest
import torch
from torch import nn

from advlab import records
from advlab.artifacts import attack_run, evaluate_run
from advlab.attacks import build_attack
from advlab.data import load_dataset
from advlab.subject import Subject


def declared_order(record_type: type, record: dict) -> list[str]:
    """The keys of `record_type` that `record` carries, in the order the type declares them."""
    return [k for k in record_type.__annotations__ if k in record]


def check(record_type: type, record: dict) -> None:
    assert list(record) == declared_order(record_type, record), f"{record_type.__name__}: keys out of order"
    unknown = set(record) - set(get_type_hints(record_type))
    assert not unknown, f"{record_type.__name__} does not declare {sorted(unknown)}"
    required = record_type.__required_keys__  # type: ignore[attr-defined]
    assert required <= set(record), f"{record_type.__name__}: missing {sorted(required - set(record))}"


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    run_dir = tmp_path_factory.mktemp("records")
    return Subject(model, {}, load_dataset("blobs"), torch.device("cpu"), run_dir,
                   records.ModelInfo(spec="test", weights_sha256=None))


def test_the_attack_record_is_typed_and_its_json_unchanged(subject):
    record = attack_run(subject, build_attack("pgd", norm="l2", steps=3), eps=[0.5, 1.0], n=30, save=True,
                        progress=False)
    check(records.AttackRecord, record)
    for row in record["results"]:
        check(records.AttackRow, row)
    # A TypedDict is the dict it was: the JSON (what --json prints) is the same text as a plain dict's.
    assert type(record) is dict and type(record["results"][0]) is dict
    assert json.dumps(record) == json.dumps(json.loads(json.dumps(record)))
    assert list(record["results"][0]) == ["eps", "robust_accuracy", "success_rate", "mean_wrong_confidence",
                                          "median_norm"]


def test_the_evaluate_record_is_typed_and_its_json_unchanged(subject):
    record = evaluate_run(subject, eps=[0.5], norm="l2", suite="fast", n=20, check_n=10, progress=False,
                          out=subject.run_dir / "ev", certify="crown")
    check(records.EvaluateRecord, record)
    for row in record["results"]:
        check(records.EvaluateRow, row)
    for c in record["checks"]:
        check(records.CheckRecord, c)
    written = json.loads((subject.run_dir / "ev" / "result.json").read_text())
    assert list(written) == list(record) and list(written["results"][0]) == list(record["results"][0])
    assert list(record["results"][0])[:6] == ["eps", "robust_accuracy", "ci95", "per_class", "mean_wrong_confidence",
                                              "broken_by"]
