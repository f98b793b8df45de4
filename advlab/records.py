"""The records advlab writes and reads: what `--json` prints, what RUN/.../result.json holds, what the
report renders. One schema, checked by mypy where the records are built and read (docs/records.md).

They are TypedDicts: at run time a record is a plain dict (so `json.dumps` of it is what it always
was, key order included), and in the type checker every key is declared, spelled once, with its
type. A key that only some records carry is `NotRequired`. Keys are declared in the order the
writers put them, and tests/test_records.py holds the writers to that order.

This module imports nothing from advlab: any layer may use it. (No `from __future__ import annotations`:
TypedDict reads NotRequired from the evaluated annotations.)
"""

from typing import Any

from typing_extensions import NotRequired, TypedDict

# -- what every step records about its subject (advlab.subject.Subject.record) -----------------------


class ModelInfo(TypedDict, total=False):
    """The model that was attacked: a run (`run`) or a model file (`spec`, `weights_sha256`)."""
    run: str
    spec: str
    weights_sha256: str | None


class DataInfo(TypedDict, total=False):
    """The data the points came from: `name`, `n_test` and `input_shape` always; files add where they came from."""
    name: str
    n_test: int
    input_shape: list[int]
    path: str
    format: str
    sha256: str
    source: str
    labels: str
    preprocess: str
    subset: Any


class SubjectInfo(TypedDict):
    """The three keys advlab.subject.Subject.record adds to every record."""
    model: ModelInfo
    device: str
    data: DataInfo


# -- advlab attack --------------------------------------------------------------------------------------


class AttackRow(TypedDict):
    """One budget of `advlab attack` (AttackResult.summary)."""
    eps: float
    robust_accuracy: float        # share of all n points still classified correctly
    success_rate: float           # share of the clean-correct points on which the attack met its goal
    mean_wrong_confidence: float  # mean top probability on the misclassified adversarial examples (nan: none)
    median_norm: float            # median perturbation size over the fooled points (nan: none)


class AttackRecord(TypedDict):
    """`advlab attack --json` and RUN/attacks/ATTACK-NORM/result.json (advlab.artifacts.attack_run)."""
    attack: str
    norm: str                     # the threat's name: linf, l2, l1, embedding, spatial
    n: int
    clean_accuracy: float
    seconds: float                # the attack's own wall time
    results: list[AttackRow]
    model: ModelInfo
    device: str
    data: DataInfo
    precision: str                         # what the search ran in (fp32, bf16, fp16); every number is fp32
    passes: NotRequired[dict[str, int]]  # {"forward", "backward"}: model rows through each pass (advlab.passes)
    batch_size_after_oom: NotRequired[int]
    eps_per_class: NotRequired[list[float]]
    threat: NotRequired[str]               # "embedding" for an embedding-space attack, with the four below
    embedding: NotRequired[str]
    pixel_norm: NotRequired[str]
    pixel_eps: NotRequired[float | None]
    median_pixel_norm: NotRequired[list[float]]
    saved: NotRequired[str]                # the folder the examples were written to (--save)


# -- advlab evaluate ------------------------------------------------------------------------------------


class EvaluateRow(TypedDict):
    """One budget of `advlab evaluate` (Evaluation.results)."""
    eps: float
    robust_accuracy: float                  # worst case over the suite, per point
    ci95: list[float]                       # Clopper-Pearson interval [lo, hi] of robust_accuracy
    per_class: list[float]                  # robust accuracy of each true class
    mean_wrong_confidence: float
    broken_by: dict[str, int]               # points broken first by each attack ("clean mistake": already wrong)
    # With --certify (advlab.certify.bracket.certified_rows): the certified lower bound beside the attacked upper one.
    certified_accuracy: NotRequired[float]
    certified_ci95: NotRequired[list[float]]
    gap: NotRequired[float]                 # robust_accuracy - certified_accuracy
    certified_but_broken: NotRequired[int]  # a certificate of the model itself contradicted by an attack (a bug)
    falsified: NotRequired[int]             # exact: points with a counterexample
    unknown: NotRequired[int]               # exact: points undecided within the timeout
    missed_by_attacks: NotRequired[int]     # exact: breakable points the suite left standing
    robust_accuracy_exact: NotRequired[float | None]  # when the bracket closes (None: it does not)


class CheckRecord(TypedDict):
    """One gradient-masking check (advlab.evaluate.checks.CheckResult.as_dict)."""
    name: str
    passed: bool
    detail: str
    doc: str
    explanation: str


class EvaluateRecord(TypedDict):
    """`advlab evaluate --json` and RUN/eval/SUITE-NORM/result.json (advlab.artifacts.evaluate_run)."""
    suite: str
    norm: str
    n: int
    clean_accuracy: float
    seconds: float                          # the whole step: suite, checks and certificates
    suite_seconds: float                    # the suite's attacks alone
    checks_seconds: float
    check_n: int
    attack_seconds: dict[str, float]
    verdict: str
    results: list[EvaluateRow]
    confidence_clean_mistakes: float
    adversarial_confusion: list[list[list[int]]]
    classes: list[str]
    checks: list[CheckRecord]
    model: ModelInfo
    device: str
    data: DataInfo
    passes: dict[str, int]                  # {"forward", "backward"} of the suite's attacks
    checks_passes: dict[str, int]
    world_size: int
    precision: str                          # what the attacks searched in; every number is fp32
    batch_size_after_oom: NotRequired[dict[str, int]]
    eps_per_class: NotRequired[list[float]]
    adaptive: NotRequired[list[str]]        # the adaptations evaluated (bpda, rescale, eot; --adaptive); both
    recommended_adaptation: NotRequired[list[str]]  # always written by evaluate_run: what the failed checks point to
    certify: NotRequired[dict[str, Any]]    # the certified lower bound beside each row (--certify)
    adaptive_command: NotRequired[str]      # the command that runs the recommended adaptation
    summary: NotRequired[dict[str, Any]]    # the README-ready summary and the command that reproduces it (always
                                            # written; added last, after the certificates)


# -- advlab certify -------------------------------------------------------------------------------------


class CertifiedRow(TypedDict):
    """Certified accuracy at one radius (advlab.certify.result.Certificate.curve)."""
    radius: float
    accuracy: float
    ci95: list[float]


class CertifiedPoint(TypedDict):
    """One point of `advlab certify` (prediction -1: the smoothed classifier abstained)."""
    index: int
    label: int
    prediction: int
    radius: float
    status: NotRequired[str]                # exact verification: verified | falsified | unknown


__all__ = ["AttackRecord", "AttackRow", "CertifiedPoint", "CertifiedRow", "CheckRecord", "DataInfo",
           "EvaluateRecord", "EvaluateRow", "ModelInfo", "SubjectInfo"]
