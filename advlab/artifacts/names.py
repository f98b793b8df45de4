"""What a run directory holds: every file and folder name advlab writes, in one place.

    RUN/model.safetensors, RUN/card.json                 advlab train (advlab.runs)
    RUN/checkpoint/                                       an interrupted training (--resume)
    RUN/attacks/ATTACK-NORM/result.json                   advlab attack --save (advlab.artifacts.attack)
                 adversarial.safetensors, grid-epsE.png
    RUN/eval/SUITE-NORM/result.json, curve.csv,           advlab evaluate (advlab.artifacts.evaluate)
                 per_class.csv, adversarial.safetensors, state.safetensors
    RUN/certify/METHOD-NORM-PARAM/result.json,            advlab certify (advlab.artifacts.certify)
                 curve.csv, points.csv, state.safetensors,
                 counterexamples.safetensors (exact)
    RUN/transfer/ATTACK-from-SOURCE-NORM/                 examples transferred from another model
    DIR/transfer.json                                     a transfer matrix (advlab.artifacts.transfer)
    DIR/distances.json, eps_per_class_NORM.json           advlab analyze distances
    DIR/perceptibility.json, blobs.json, ...              the other analyses
    DIR/reproduce.json                                    advlab reproduce NAME
    DIR/demo.json, DIR/report.html                        advlab demo, advlab report
    RUN/export/robustbench/NAME.json, NAME.pt, NAME_log.txt   advlab export robustbench (advlab.artifacts.export)
    GAN/figures/samples.png, GAN/attacks/NAME/unrestricted.json   advlab generate

The writers (advlab.artifacts.*, advlab.runs, the analyses) and the readers (advlab.report,
advlab.evaluate.recorded) import the names from here, so a name changes in one line. This module
imports nothing from advlab: anything may import it.
"""

from __future__ import annotations

import os
from pathlib import Path

# -- a trained run ----------------------------------------------------------------------------------
MODEL_FILE = "model.safetensors"
CARD_FILE = "card.json"
CHECKPOINT_DIR = "checkpoint"
FIGURES_DIR = "figures"

# -- the steps below a run, one folder each ---------------------------------------------------------
ATTACKS_DIR = "attacks"
EVAL_DIR = "eval"
CERTIFY_DIR = "certify"
TRANSFER_DIR = "transfer"
EXPORT_DIR = "export"
RECORDED_KINDS = (ATTACKS_DIR, EVAL_DIR, TRANSFER_DIR)  # the folders that hold adversarial examples

RESULT_FILE = "result.json"                # the step's record (what --json prints)
EXAMPLES_FILE = "adversarial.safetensors"  # x, x_adv, logits, y, clean_logits
STATE_FILE = "state.safetensors"           # resumable state of an evaluation or certification
CURVE_CSV = "curve.csv"
PER_CLASS_CSV = "per_class.csv"
POINTS_CSV = "points.csv"
COUNTEREXAMPLES_FILE = "counterexamples.safetensors"  # exact verification: index, x, x_adv, logits, y

# -- analyses, experiments, reports -----------------------------------------------------------------
TRANSFER_FILE = "transfer.json"
DISTANCES_FILE = "distances.json"
PERCEPTIBILITY_FILE = "perceptibility.json"
PERCEPTIBILITY_PNG = "perceptibility.png"
BLOBS_FILE = "blobs.json"
LINEARITY_FILE = "linearity.json"
THEORY_FILE = "theory.json"
EMBEDDING_FILE = "embedding.json"  # advlab analyze embedding (advlab.metric)
REPRODUCE_FILE = "reproduce.json"
DEMO_FILE = "demo.json"
REPORT_FILE = "report.html"

# -- generative (AC-GAN) runs -----------------------------------------------------------------------
SAMPLES_PNG = "samples.png"
QUALITY_PNG = "quality.png"
QUALITY_FILE = "quality.json"
UNRESTRICTED_FILE = "unrestricted.json"
UNRESTRICTED_PNG = "examples.png"
UNRESTRICTED_EXAMPLES = "examples.safetensors"


def robustbench_entry(name: str) -> str:
    """RobustBench's model-info JSON for model NAME (advlab export robustbench)."""
    return f"{name}.json"


def robustbench_examples(name: str) -> str:
    """The adversarial examples as one tensor, in test-set order (advlab export robustbench)."""
    return f"{name}.pt"


def robustbench_log(name: str) -> str:
    """The per-attack log of the exported evaluation."""
    return f"{name}_log.txt"


def grid_png(eps: float) -> str:
    """An attack's example grid at one budget."""
    return f"grid-eps{float(eps):g}.png"


def eps_per_class_file(norm: str) -> str:
    """Per-class budgets from the distance analysis, for --eps-per-class."""
    return f"eps_per_class_{norm}.json"


def attack_dir(run_dir: str | os.PathLike, attack: str, norm: str) -> Path:
    return Path(run_dir) / ATTACKS_DIR / f"{attack}-{norm}"


def eval_dir(run_dir: str | os.PathLike, suite: str, norm: str) -> Path:
    return Path(run_dir) / EVAL_DIR / f"{suite}-{norm}"


def certify_dir(run_dir: str | os.PathLike, method: str, sigma: float | None = None,
                eps: float | None = None, norm: str | None = None) -> Path:
    """RUN/certify/smoothing-l2-sigmaS, ibp-linf-epsE, crown-l2-epsE, alpha-crown-linf-epsE, exact-linf-epsE."""
    if method == "smoothing":
        name = f"smoothing-l2-sigma{sigma:g}"
    else:
        name = f"{method}-{norm or 'linf'}-eps{eps:g}"
    return Path(run_dir) / CERTIFY_DIR / name


def transfer_examples_dir(run_dir: str | os.PathLike, attack: str, source: str, norm: str) -> Path:
    """Examples crafted on model `source` and recorded in the run they were shown to."""
    return Path(run_dir) / TRANSFER_DIR / f"{attack}-from-{source}-{norm}"
