"""advlab analyze: which epsilon makes sense for the data, and why adversarial examples exist.

    advlab analyze distances      class-distance matrices, nearest neighbours, suggested eps, per-class budgets
    advlab analyze perceptibility clip(x0 + eps * sign(x1)) over an eps grid
    advlab analyze linearity      eps * ||w||_1 grows with the input dimension (Goodfellow et al. 2015)
    advlab analyze theory         robust accuracy vs dimension and vs training samples (Schmidt et al. 2018)
    advlab analyze blobs          the first picture: blobs, logistic regression, FGSM, closed-form error
    advlab analyze embedding      triplet network, eps in the embedding, pixel vs embedding attacks

Each writes NAME.json plus PNG figures to --out (default runs/analyze/NAME-DATASET); the layouts
are documented in docs/analysis.md. Each takes --device (default auto); the handler resolves it
first, so a missing GPU is an error (exit 2) before any work.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .. import rundir
from ..parsing import parse_key_values, parse_number
from ..data import DATASET_NAMES, load_dataset
from ..device import resolve_device
from ..errors import AdvlabError
from .common import emit, finish, log
from .common import add_subcommand as _add_subcommand
from . import types as T

EXAMPLE = "advlab analyze distances --dataset digits --per-class 100 --norms l1,l2,linf --out runs/analyze/digits --json"


# Each analysis: (what it does, an example), shown by `advlab analyze NAME --help`.
ANALYSES = {
    "distances": (
        "Class-distance matrices (mean pairwise distance per pair of classes, per norm), within- and "
        "between-class nearest neighbours, train-to-test nearest neighbours, classes closer to another "
        "class than to themselves, and suggested budgets with the reasoning; writes per-class budgets "
        "(eps_per_class_NORM.json) for --eps-per-class.",
        EXAMPLE),
    "perceptibility": (
        "Blend two classes as clip(x0 + eps * sign(x1)) over an eps grid: an Linf budget that is small by "
        "the number can be obvious to a person.",
        "advlab analyze perceptibility --dataset digits --eps 0,0.05,0.1,0.2,0.3 --pairs 0:5,1:6 --out runs/analyze/p"),
    "linearity": (
        "The linear explanation (Goodfellow et al. 2015, sec. 3): under eps * sign(w) a linear score moves by "
        "eps * ||w||_1, which grows with the input dimension n. Sweeps n on the gaussian model (closed-form "
        "prediction) or on an image dataset padded with noise features.",
        "advlab analyze linearity --dataset gaussian --dims 10,30,100,300,1000,3000 --eps 0.1 --out runs/analyze/lin"),
    "theory": (
        "Robustness theory on the two-class Gaussian model (Schmidt et al. 2018), measured beside closed "
        "forms: robust accuracy of linear classifiers against dimension at fixed eps, and standard versus "
        "robust accuracy against the number of training samples.",
        "advlab analyze theory --experiments dimension,samples --out runs/analyze/theory"),
    "blobs": (
        "The first picture: two Gaussian blobs, logistic regression, FGSM at each eps; an error table with "
        "the error predicted in closed form for the trained model, and a scatter plot with the boundary.",
        "advlab analyze blobs --eps 0,0.2,0.5 --out runs/analyze/blobs"),
    "embedding": (
        "Epsilon in a learned embedding: train (or load) a triplet network, report k-NN accuracy and Recall@1, "
        "within/between-class embedding distances and a suggested embedding budget eps_e, then attack a classifier "
        "in pixel space and in the embedding (||f(x')-f(x)||_2 <= eps_e) and compare, at matched success rates, how "
        "often the adversarial examples change the embedding's k-NN label. Writes embedding.json and figures.",
        "advlab analyze embedding --dataset digits --epochs 10 --n 300 --out runs/analyze/embedding-digits --json"),
}


def add_subcommand(subparsers, name: str, help: str | None = None,
                   example: str | None = None) -> argparse.ArgumentParser:
    """common.add_subcommand, with the long description wrapped for the terminal (an analysis: from ANALYSES)."""
    if help is None:
        help, example = ANALYSES[name]
    p = _add_subcommand(subparsers, name, help, example)
    p.description = f"{textwrap.fill(help, 96)}\n\nExample:\n  {example}"
    return p


def _print(args: argparse.Namespace, record: dict, lines: list[str], last: str) -> int:
    """Print the record (--json) or the table `lines` and a last line saying where the results are."""
    emit(args, record, "\n".join([*lines, last]))
    return 0


def add_parser(subparsers) -> None:
    p = add_subcommand(
        subparsers, "analyze",
        "Analyse the data and the phenomenon: which epsilon makes sense, and why adversarial examples exist. "
        "Sub-commands: distances, perceptibility, linearity, theory, blobs, embedding (each has --help and --json).",
        EXAMPLE)
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    _distances(sub)
    _perceptibility(sub)
    _linearity(sub)
    _theory(sub)
    _blobs(sub)
    _embedding(sub)


# -- distances ----------------------------------------------------------------------------------
def _distances(sub) -> None:
    p = add_subcommand(sub, "distances")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="option of a generated dataset")
    p.add_argument("--per-class", type=T.positive_int, default=100,
                   help="training images per class for the class-distance matrix and the within/between-class "
                        "nearest neighbours (searched in the full training set)")
    p.add_argument("--norms", default="l1,l2,linf", help="comma-separated norms: l1, l2, linf")
    p.add_argument("--n", type=T.positive_int, default=None,
                   help="first N test images for the train-to-test nearest neighbours (default: all)")
    p.add_argument("--percentile", type=T.percentile, default=5.0,
                   help="percentile of between-class nearest-neighbour distances for the alternative budget")
    p.add_argument("--budget-rule", choices=["separation", "percentile"], default="separation",
                   help="rule for the per-class budgets: half the smallest between-class NN distance of the "
                        "class's points, or half its percentile")
    p.add_argument("--block", type=T.positive_int, default=2048, help="rows per block of the distance matrix (memory bound)")
    p.add_argument("--workers", type=T.positive_int, default=None, help="threads for L1/Linf blocks (default: torch threads)")
    finish(p, run_distances, "output directory (default runs/analyze/distances-DATASET)",
           device="where the distance tiles are computed: auto takes the GPU when there is one (float64 tiles, "
                  "results back on the CPU); cpu is the exact multithreaded numpy code")


def run_distances(args: argparse.Namespace) -> int:
    from ..artifacts.analysis import distances_run
    device = resolve_device(args.device)  # a missing GPU fails before any work
    out = Path(args.out or f"runs/analyze/distances-{args.dataset}")
    record = distances_run(args.dataset, out, data_dir=args.data_dir,
                           dataset_args=parse_key_values(args.dataset_arg, "--dataset-arg"), per_class=args.per_class,
                           norms=[n.strip() for n in args.norms.split(",") if n.strip()], n_test=args.n,
                           percentile=args.percentile, rule=args.budget_rule, seed=args.seed, block=args.block,
                           workers=args.workers, progress=not args.no_progress, device=device)
    lines = [f"{args.dataset}: {args.per_class} training examples per class, {record['n_test']} test examples "
             f"({record['seconds']:.1f} s)", ""]
    lines.append(f"{'norm':<5} {'suggested_eps':>13} {'percentile eps':>14} {'1-NN acc':>9}  closer to another class")
    for norm, e in record["norms"].items():
        closer = ", ".join(f"{r['name']}->{r['closest_name']}" for r in e["closer_than_itself"]) or "none"
        lines.append(f"{norm:<5} {e['suggested_eps']:>13.4g} {e['suggested_eps_percentile']:>14.4g} "
                     f"{e['train_test_nn']['one_nn_accuracy']:>9.4f}  {closer}")
    lines.append("")
    for norm, e in record["norms"].items():
        lines.append(textwrap.fill(f"{norm}: {e['reasoning']}", 100, subsequent_indent="  "))
    return _print(args, record, lines, f"\nresults in {out / rundir.DISTANCES_FILE}; per-class budgets in "
                                       f"{out / rundir.eps_per_class_file('NORM')}")


# -- perceptibility -----------------------------------------------------------------------------
def _perceptibility(sub) -> None:
    p = add_subcommand(sub, "perceptibility")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--eps", type=T.eps_values, default="0,0.05,0.1,0.2,0.3", help="Linf budgets in raw input units")
    p.add_argument("--pairs", default=None,
                   help="class pairs SOURCE:TARGET, comma-separated (default: 0:K/2, 1:K/2+1, 2:..., 3:...)")
    finish(p, run_perceptibility, "output directory (default runs/analyze/perceptibility-DATASET)",
           device="accepted like everywhere (and checked: a missing GPU is an error), but no model runs here: the "
                  "blends are a few small tensor operations on the CPU")


def run_perceptibility(args: argparse.Namespace) -> int:
    from ..artifacts.analysis import perceptibility_run
    resolve_device(args.device)  # checked for uniformity; nothing here runs a model
    out = Path(args.out or f"runs/analyze/perceptibility-{args.dataset}")
    record = perceptibility_run(args.dataset, out, eps=args.eps, pairs=_pairs(args.pairs),
                                seed=args.seed, data_dir=args.data_dir)
    lines = [f"{args.dataset}: clip(x0 + eps * sign(x1)) for eps in {record['eps']}"]
    for r in record["pairs"]:
        l2 = ", ".join(f"{v:.2f}" for v in r["l2"])
        lines.append(f"  {r['source_name']} (test {r['source_index']}) + sign of {r['target_name']} "
                     f"(test {r['target_index']}): L2 size {l2}")
    return _print(args, record, lines, f"grid in {record['figures']['grid']}")


def _pairs(text: str | None) -> list[tuple[int, int]] | None:
    if text is None:
        return None
    pairs = []
    for item in text.split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit():
            raise AdvlabError(f"--pairs expects SOURCE:TARGET class indices such as 0:5,1:6, got {item!r}")
        pairs.append((int(a), int(b)))
    return pairs


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise AdvlabError(f"{flag} expects comma-separated integers such as 1,10,100, got {text!r}") from None
    if not values:
        raise AdvlabError(f"{flag} needs at least one value")
    return values


# -- linearity ----------------------------------------------------------------------------------
def _linearity(sub) -> None:
    p = add_subcommand(sub, "linearity")
    p.add_argument("--dataset", default="gaussian", choices=[d for d in DATASET_NAMES if d != "blobs"])
    p.add_argument("--eps", type=T.non_negative_float, default="0.1", help="Linf budget")
    p.add_argument("--dims", type=T.positive_int_list, default="10,30,100,300,1000,3000", help="gaussian: input dimensions to sweep")
    p.add_argument("--signal", type=T.positive_float, default=3.0, help="gaussian: ||class mean||_2, the same for every n")
    p.add_argument("--sigma", type=T.positive_float, default=1.0, help="gaussian: noise standard deviation")
    p.add_argument("--n-train", type=T.positive_int, default=2000, help="gaussian: training points")
    p.add_argument("--n-test", type=T.positive_int, default=2000, help="gaussian: test points")
    p.add_argument("--classes", default="3,7", help="image datasets: the two classes (logistic regression is binary)")
    p.add_argument("--pad", type=T.non_negative_int_list, default="0,1,3,7", help="image datasets: noise features to append, in multiples of the "
                                                    "image size (n = D * (1 + pad))")
    p.add_argument("--weight-decay", type=T.non_negative_float, default=1e-4)
    finish(p, run_linearity, "output directory (default runs/analyze/linearity-DATASET)", device=_LINEAR_DEVICE_HELP)


_LINEAR_DEVICE_HELP = ("where the fitted linear models are attacked (FGSM) and evaluated: auto takes the GPU when "
                       "there is one; the fits (scipy L-BFGS, float64) and the closed forms run on the CPU")


def run_linearity(args: argparse.Namespace) -> int:
    from ..analysis.linearity import run_linearity as run
    device = resolve_device(args.device)  # a missing GPU fails before any work
    out = Path(args.out or f"runs/analyze/linearity-{args.dataset}")
    record = run(args.dataset, eps=parse_number(args.eps, "--eps"), dims=_ints(args.dims, "--dims"),
                 classes=_ints(args.classes, "--classes"), pads=_ints(args.pad, "--pad"), signal=args.signal,
                 sigma=args.sigma, n_train=args.n_train, n_test=args.n_test, weight_decay=args.weight_decay,
                 seed=args.seed, data_dir=args.data_dir, out=out, log=None if args.json else log, device=device)
    lines = [f"{'n':>6} {'eps*||w||_1':>12} {'measured':>10} {'FGSM error':>11} {'predicted':>10} {'clean error':>12}"]
    for r in record["rows"]:
        a, f = r["activation_change"], r["fgsm_error"]
        lines.append(f"{r['n']:>6} {a['predicted']:>12.4g} {a['mean']:>10.4g} {f['measured']:>11.2%} "
                     f"{f.get('predicted', f['predicted_from_margins']):>10.2%} {r['clean_error']['measured']:>12.2%}")
    return _print(args, record, lines, f"results in {out / rundir.LINEARITY_FILE} ({record['seconds']:.1f} s)")


# -- theory -------------------------------------------------------------------------------------
def _theory(sub) -> None:
    p = add_subcommand(sub, "theory")
    p.add_argument("--experiments", default="dimension,samples", help="dimension and/or samples")
    p.add_argument("--dims", type=T.positive_int_list, default="1,2,5,10,20,50,100,200,500,1000,2000", help="dimension: d values")
    p.add_argument("--eps", type=T.non_negative_float, default="0.1", help="dimension: Linf budget")
    p.add_argument("--signal", type=T.positive_float, default=2.0, help="dimension: ||class mean||_2, the same for every d")
    p.add_argument("--sigma", type=T.positive_float, default=1.0, help="dimension: noise standard deviation")
    p.add_argument("--n-train", type=T.positive_int, default=2000, help="dimension: training points")
    p.add_argument("--samples", type=T.positive_int_list, default="1,2,5,10,20,50,100,200,500,1000", help="samples: training set sizes")
    p.add_argument("--sample-dim", type=T.positive_int, default=1000, help="samples: dimension d")
    p.add_argument("--sample-mu", type=T.positive_float, default=1.0, help="samples: mean of every coordinate")
    p.add_argument("--sample-sigma", type=T.positive_float, default=None, help="samples: noise std (default d^(1/4) / 2)")
    p.add_argument("--sample-eps", type=T.positive_float, default="0.7", help="samples: Linf budget")
    p.add_argument("--reps", type=T.positive_int, default=3, help="samples: training sets drawn per size")
    p.add_argument("--n-test", type=T.positive_int, default=2000, help="test points")
    finish(p, run_theory, "output directory (default runs/analyze/theory)", data_dir=False, device=_LINEAR_DEVICE_HELP)


def run_theory(args: argparse.Namespace) -> int:
    from ..analysis.theory import run_theory as run
    device = resolve_device(args.device)  # a missing GPU fails before any work
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()]
    out = Path(args.out or "runs/analyze/theory")
    record = run(experiments, out=out, seed=args.seed, log=None if args.json else log, device=device,
                 dimension_kwargs=dict(dims=_ints(args.dims, "--dims"), eps=parse_number(args.eps, "--eps"),
                                       signal=args.signal, sigma=args.sigma, n_train=args.n_train,
                                       n_test=args.n_test),
                 samples_kwargs=dict(samples=_ints(args.samples, "--samples"), dim=args.sample_dim,
                                     mu=args.sample_mu, sigma=args.sample_sigma,
                                     eps=parse_number(args.sample_eps, "--sample-eps"), reps=args.reps,
                                     n_test=args.n_test))
    lines = []
    if "dimension" in record:
        lines.append(f"{'d':>6} {'best linear robust':>19} {'standard LR robust (pred.)':>27} {'adv. LR robust':>15}")
        for r in record["dimension"]["rows"]:
            s = r["standard"]["robust_accuracy"]
            lines.append(f"{r['dim']:>6} {r['best_linear']['robust_accuracy']:>19.3f} "
                         f"{s['measured']:>18.3f} ({s['predicted']:.3f}) "
                         f"{r['adversarial']['robust_accuracy']['measured']:>15.3f}")
    if "samples" in record:
        lines.append(f"\n{'n':>6} {'clean (pred.)':>15} {'robust (pred.)':>16} {'adv. LR robust':>15}   mean estimator")
        for r in record["samples"]["rows"]:
            c, rb = r["mean_estimator"]["clean_accuracy"], r["mean_estimator"]["robust_accuracy"]
            lines.append(f"{r['n_train']:>6} {c['measured']:>6.3f} ({c['predicted']:.3f}) "
                         f"{rb['measured']:>7.3f} ({rb['predicted']:.3f}) "
                         f"{r['adversarial']['robust_accuracy']['measured']:>15.3f}")
    return _print(args, record, lines, f"results in {out / rundir.THEORY_FILE} ({record['seconds']:.1f} s)")


# -- blobs --------------------------------------------------------------------------------------
def _blobs(sub) -> None:
    p = add_subcommand(sub, "blobs")
    p.add_argument("--eps", type=T.eps_values, default="0,0.2,0.5", help="Linf budgets")
    p.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE",
                   help="blobs option (n, dim, separation, sigma, test_fraction, seed; seed defaults to --seed)")
    p.add_argument("--loss", choices=["ce", "margin"], default="ce", help="FGSM loss")
    p.add_argument("--weight-decay", type=T.non_negative_float, default=1e-4)
    finish(p, run_blobs, "output directory (default runs/analyze/blobs)", data_dir=False, device=_LINEAR_DEVICE_HELP)


def run_blobs(args: argparse.Namespace) -> int:
    from ..analysis.blobs import blobs_picture, table
    device = resolve_device(args.device)  # a missing GPU fails before any work
    kwargs = {"seed": args.seed, **parse_key_values(args.dataset_arg, "--dataset-arg")}
    out = Path(args.out or "runs/analyze/blobs")
    record = blobs_picture(args.eps, dataset_kwargs=kwargs, loss=args.loss,
                           weight_decay=args.weight_decay, out=out, device=device)
    m = record["model"]
    text = (f"logistic regression on blobs: w = [{', '.join(f'{v:.3f}' for v in m['w'][:4])}], b = {m['b']:.3f}, "
            f"test accuracy {m['test_accuracy']:.4f}\n{table(record)}\n"
            f"(predicted: closed form for this model; best linear: w = 1 through the midpoint)\n"
            f"results in {out / rundir.BLOBS_FILE}")
    emit(args, record, text)
    return 0


# -- embedding ----------------------------------------------------------------------------------
def _embedding(sub) -> None:
    p = add_subcommand(sub, "embedding")
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES)
    p.add_argument("--embedding", type=T.existing_dir, default=None, metavar="RUN_DIR", help="use this embedding run instead of training "
                   "one in OUT/embedding")
    p.add_argument("--run", type=T.existing_dir, default=None, metavar="RUN_DIR", help="classifier to attack (default: train one in "
                   "OUT/classifier)")
    p.add_argument("--referee", type=T.existing_dir, default=None, metavar="RUN_DIR",
                   help="a second embedding run (e.g. --seed 1) whose k-NN label also judges the adversarial "
                        "examples: a referee independent of the embedding that bounds the attack")
    p.add_argument("--retrain", action="store_true", help="train a new triplet network even if OUT/embedding exists")
    g = p.add_argument_group("triplet network")
    g.add_argument("--arch", default=None, help="backbone from the model registry (default cnn-small for images, "
                   "mlp for features)")
    g.add_argument("--dim", type=T.positive_int, default=32, help="embedding dimension")
    g.add_argument("--margin", type=T.non_negative_float, default=0.2, help="triplet margin alpha (embeddings are on the unit sphere)")
    g.add_argument("--mining", default="semi-hard", choices=["batch-hard", "semi-hard", "all"],
                   help="triplets per batch (batch-hard can sit at loss = margin for epochs on normalised embeddings)")
    g.add_argument("--epochs", type=T.positive_int, default=10)
    g.add_argument("--batch-size", type=T.positive_int, default=128)
    g.add_argument("--lr", type=T.positive_float, default=3e-3, help="peak learning rate (adam, one-cycle)")
    g = p.add_argument_group("quality and calibration")
    g.add_argument("--k", type=T.positive_int, default=5, help="neighbours for k-NN accuracy and the k-NN label")
    g.add_argument("--per-class", type=T.positive_int, default=100, help="training points per class for the distance matrix")
    g.add_argument("--percentile", type=T.percentile, default=5.0,
                   help="suggested eps_e = half this percentile of the between-class nearest-neighbour distances")
    g.add_argument("--projection", default="pca", choices=["pca", "tsne"], help="2-D projection for the plot")
    g = p.add_argument_group("comparison")
    g.add_argument("--no-compare", action="store_true", help="skip the attacks (embedding and calibration only)")
    g.add_argument("--classifier-model", default=None, help="model of the trained classifier (default cnn-small/mlp)")
    g.add_argument("--classifier-epochs", type=T.positive_int, default=10)
    g.add_argument("--n", type=T.positive_int, default=300, help="attack the first N test points")
    g.add_argument("--steps", type=T.positive_int, default=20, help="PGD steps (both threat models)")
    g.add_argument("--pixel-norm", default="linf", choices=["linf", "l2", "l1"])
    g.add_argument("--pixel-eps", type=T.eps_values, default=None, help="pixel budgets (default: a grid for the norm)")
    g.add_argument("--embedding-eps", type=T.eps_values, default=None,
                   help="embedding budgets (default: fractions of the mean between-class embedding distance)")
    g.add_argument("--targets", type=T.rates, default="0.25,0.5,0.75", help="success rates at which to match the two attacks")
    finish(p, run_embedding, "output directory (default runs/analyze/embedding-DATASET)")


def run_embedding(args: argparse.Namespace) -> int:
    from ..metric.analyze import analyze_embedding
    device = resolve_device(args.device)  # a missing GPU fails before any work
    pixel_eps, embedding_eps, targets = args.pixel_eps, args.embedding_eps, args.targets
    for flag, value in (("--epochs", args.epochs), ("--dim", args.dim), ("--k", args.k), ("--steps", args.steps),
                        ("--batch-size", args.batch_size), ("--classifier-epochs", args.classifier_epochs)):
        if value < 1:
            raise AdvlabError(f"{flag} must be >= 1, got {value}")
    if args.margin < 0 or args.lr <= 0:
        raise AdvlabError(f"--margin must be >= 0 and --lr > 0, got {args.margin}, {args.lr}")
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    out = Path(args.out or f"runs/analyze/embedding-{args.dataset}")
    train = {"arch": args.arch, "dim": args.dim, "margin": args.margin, "mining": args.mining, "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "k": args.k}
    record = analyze_embedding(ds, out, embedding=args.embedding, run=args.run, referee=args.referee, train=train,
                               retrain=args.retrain,
                               classifier_model=args.classifier_model, classifier_epochs=args.classifier_epochs,
                               k=args.k, per_class=args.per_class, percentile=args.percentile,
                               projection=args.projection, n=args.n, steps=args.steps, pixel_norm=args.pixel_norm,
                               pixel_eps=pixel_eps, embedding_eps=embedding_eps, targets=targets,
                               compare_attacks=not args.no_compare, seed=args.seed, data_dir=args.data_dir,
                               progress=not args.no_progress, log=None if args.json else log, device=device)
    q, c = record["quality"], record["calibration"]
    lines = [f"{args.dataset}: triplet embedding {record['embedding_run']} ({record['embedding']['arch']}, "
             f"dim {record['embedding']['dim']}, {record['embedding']['mining']})",
             f"  k-NN accuracy {q['knn_accuracy']:.4f} (k={q['k']}), Recall@1 {q['recall_at_1']:.4f} on "
             f"{q['n_test']} test points",
             f"  embedding distances: mean within-class {c['mean_within_class']:.4g}, mean between-class "
             f"{c['mean_between_class']:.4g}; between-class NN median {c['between_class_nn']['median']:.4g}",
             f"  suggested eps_e {c['suggested_eps']:.4g} (half the {c['percentile']:g}th percentile of between-class "
             f"NN distances; half the smallest: {c['suggested_eps_separation']:.4g})"]
    if "comparison" in record:
        cmp = record["comparison"]
        lines.append(f"\nclassifier {record['classifier_run']}: clean accuracy {cmp['clean_accuracy']:.4f}; "
                     f"{cmp['n']} points, PGD {cmp['steps']} steps")
        ref = "referee_run" in record
        lines.append(f"{'threat':<10} {'eps':>8} {'success':>8} {'kNN change':>10} {'kNN=attack':>10} "
                     f"{'pix L2':>7} {'pix Linf':>8} {'emb dist':>8}" + (f" {'referee chg':>11}" if ref else ""))
        for name in ("pixel", "embedding"):
            for r in cmp[name]["rows"]:
                lines.append(f"{name:<10} {r['eps']:>8.4g} {r['success_rate']:>8.3f} {r['knn_change_rate']:>10.3f} "
                             f"{r['knn_agrees_with_attack']:>10.3f} {r['median_pixel_l2']:>7.3f} "
                             f"{r['median_pixel_linf']:>8.3f} {r['median_embedding_distance']:>8.3f}"
                             + (f" {r['referee_knn_change_rate']:>11.3f}" if ref else ""))
        lines.append("\nmatched success rates (k-NN label change among successful adversarial examples):")
        for m in cmp["matched"]:
            p, e = m["pixel"], m["embedding"]
            lines.append(f"  target {m['target_success']:.2f}: pixel eps {p['eps']:g} (success {p['success_rate']:.3f}) "
                         f"changes kNN {p['knn_change_rate']:.3f}; embedding eps_e {e['eps']:g} (success "
                         f"{e['success_rate']:.3f}) changes kNN {e['knn_change_rate']:.3f}"
                         + (f"; referee: pixel {p['referee_knn_change_rate']:.3f}, embedding "
                            f"{e['referee_knn_change_rate']:.3f}" if ref else ""))
    return _print(args, record, lines,
                  f"results in {record['json']}; figures: {', '.join(record['figures'].values())}")
