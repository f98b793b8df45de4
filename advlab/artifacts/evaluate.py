"""Evaluate a subject with a suite and record it: the step behind `advlab evaluate` and the demo.

    from advlab.artifacts import evaluate_run
    from advlab.subject import open_subject
    record = evaluate_run(open_subject(run="runs/digits-cnn"), eps=[0.1], suite="fast", n=500)
    # -> runs/digits-cnn/eval/fast-linf/: result.json (the `advlab evaluate --json` object), curve.csv,
    #    per_class.csv, adversarial.safetensors and state.safetensors (an interrupted evaluation resumes)

The worst case per example counts the examples the run directory already holds (attacks, earlier
evaluations, transferred examples: advlab.evaluate.recorded) unless `ignore_recorded`; with `certify`,
the certified lower bound goes beside the attacked upper bound (advlab.certify.bracket). With `adaptive`
(advlab.models.adaptive: "bpda", "rescale", "eot") the suite and the checks run on the adapted model and
the results go to RUN/eval/SUITE-ADAPTATIONS-NORM; the record names the adaptations the failed checks
point to (`recommended_adaptation`) and the command that runs them (`adaptive_command`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import distributed
from ..data import rows
from ..device import describe
from ..errors import AdvlabError
from ..evaluate import Checks, evaluate_robustness, get_suite, run_checks, verdict
from ..evaluate.adaptive import recommend
from ..evaluate.recorded import recorded_sources, save_examples
from ..io import write_csv, write_json
from ..models.adaptive import adapt, parse_adaptations
from .. import rundir
from ..records import EvaluateRecord

if TYPE_CHECKING:
    from ..subject import Subject
from .attack import describe_budgets, resolve_budgets

Log = Callable[[str], None]

# The flags of `advlab evaluate` in the order the reproducing command lists them (see evaluate_command).
COMMAND_FLAGS = ("run", "model", "weights", "model_dir", "mean", "std", "dataset", "data", "data_dir", "classes",
                 "labels", "bounds", "preprocess", "eps", "eps_per_class", "norm", "suite", "suite_file", "adaptive", "n", "seed",
                 "batch_size", "chunk_size", "device", "precision", "graphs", "shares", "out")
COMMAND_REPEATED = ("model_arg", "dataset_arg")
# Written by their absolute paths, so the recorded command finds its files from any folder.
PATH_FLAGS = {"run", "weights", "model_dir", "data", "data_dir", "suite_file", "eps_per_class", "out"}


def evaluate_run(subject, *, eps: str | Sequence[float] | None = None, eps_per_class: str | os.PathLike | None = None,
                 norm: str = "linf", suite: str = "standard", suite_file: str | os.PathLike | None = None,
                 n: int | None = None, seed: int = 0, batch_size: int | None = None,
                 out: str | os.PathLike | None = None, fresh: bool = False, ignore_recorded: bool = False,
                 checks: bool = True, check_n: int = 200, chunk_size: int | None = None,
                 certify: bool | str = False, sigma: float | None = None,
                 samples: int = 1000, samples0: int = 100, alpha: float = 0.001, timeout: float | None = None,
                 command: str | None = None, started: float | None = None, progress: bool = True,
                 log: Log | None = None, precision: str = "fp32", graphs: bool = False,
                 shares: int | None = None, adaptive: str | Sequence[str] | None = None) -> EvaluateRecord | None:
    """Evaluate the first `n` test points at every budget; write OUT (default RUN/eval/SUITE-NORM) and return
    the record (None on the other processes under torchrun: the first one records). `certify`: a method
    (ibp, crown, alpha-crown, exact, smoothing) for the certified lower bound beside it, or True / "auto"
    for the norm's default (IBP for linf, smoothing with `sigma` for l2); `timeout`: exact's seconds per
    point. `command`: the command line that reproduces it, for the summary (default: built from these
    arguments); `started`: when the step began (time.perf_counter()), for its seconds. Data read on demand
    (an image folder with a preprocessing, imagenet) is evaluated `chunk_size` points at a time
    (advlab.evaluate.chunked); other data ignores it. `precision` (fp32, bf16, fp16) is what the attacks
    search in, every break verified in fp32; `graphs`: the search through CUDA graphs (advlab.precision);
    `shares`: the batch layout of each attack (default: the number of processes; distributed.stage_batches)."""
    started = time.perf_counter() if started is None else started
    log = log or (lambda message: None)
    given_out = out
    entries = get_suite(suite, suite_file, norm=norm)
    adaptations = parse_adaptations(adaptive)
    model = adapt(subject.model, adaptations, seed=seed) if adaptations else subject.model
    method = check_certify(subject, norm, certify, sigma, timeout)
    data = subject.data
    x, y = data.test_subset(n)
    entries = [e for e in entries if e.applies_to(model, x)]  # what evaluate_robustness will run (e.g. no BPDA stage)
    if not entries:
        raise AdvlabError(f"no stage of the suite {suite!r} applies to this model: each needs a preprocessing layer "
                          "(advlab.models.Preprocessed) that BPDA can see through")
    budgets, per_class = resolve_budgets(y, data.num_classes, norm, eps, eps_per_class)
    out = Path(out) if out is not None else rundir.eval_dir(subject.run_dir, "-".join([suite, *adaptations]), norm)
    state = out / rundir.STATE_FILE
    if fresh and distributed.is_main():
        state.unlink(missing_ok=True)
        shutil.rmtree(out / rundir.CHUNKS_DIR, ignore_errors=True)  # an evaluation in chunks starts over too
    distributed.barrier()
    # The worst case over everything the run already holds at this threat: those examples go first.
    recorded = [] if ignore_recorded else recorded_sources(subject.run_dir, norm, exclude=[out])
    if recorded:
        log(f"counting the examples already recorded in {subject.run_dir}: "
            f"{', '.join(r.label.removeprefix('recorded ') for r in recorded)}")
    identity = {**subject.identity(), **({"adaptive": adaptations} if adaptations else {})}
    log(f"evaluating {subject.model_record['spec']}{' adapted (' + ', '.join(adaptations) + ')' if adaptations else ''} "
        f"on {len(y)} {data.name} test points ({describe(subject.device)}"
        f"{f', {distributed.world_size()} processes' if distributed.is_distributed() else ''}): suite {suite} "
        f"({', '.join(s.label for s in entries)}), {norm} eps {describe_budgets(eps, eps_per_class)}")
    if data.lazy:
        from ..evaluate.chunked import DEFAULT_CHUNK_SIZE, evaluate_in_chunks
        ev = evaluate_in_chunks(model, x, y, budgets, [*recorded, *entries], norm=norm, bounds=data.bounds,
                                seed=seed, batch_size=batch_size, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
                                state_dir=out, progress=progress, identity=identity, precision=precision,
                                graphs=graphs, shares=shares)
    else:
        ev = evaluate_robustness(model, x, y, budgets, [*recorded, *entries], norm=norm, bounds=data.bounds,
                                 seed=seed, batch_size=batch_size, state_dir=out, progress=progress,
                                 identity=identity, precision=precision, graphs=graphs,
                                 shares=shares)
    if not distributed.is_main():
        return None
    found = _checks(model, subject, rows(x[:check_n]), y, budgets, per_class, ev, norm, seed, check_n, log) \
        if checks else Checks()
    record = _record(subject, suite, norm, ev, found, per_class, time.perf_counter() - started)
    record["adaptive"] = adaptations
    record["recommended_adaptation"] = [a for a in recommend(found, model) if a not in adaptations]
    if method is not None:
        log(f"certifying the same {len(y)} points ({method}" + (f", sigma {sigma:g})" if sigma is not None else ")"))
        from ..certify.bracket import certified_rows
        record["certify"] = certified_rows(subject, rows(x), y, budgets, norm, record["results"], method=method,
                                           robust=ev.robust, sigma=sigma, samples=samples, samples0=samples0,
                                           alpha=alpha, seed=seed, state_dir=out / rundir.CERTIFY_DIR,
                                           timeout=timeout, progress=progress)
        if record["certify"]["method"] == "smoothing":
            from ..certify.smoothing import noise_hint
            c = record["certify"]
            hint = noise_hint(sigma, len(y), c["abstained"], c["smoothed_accuracy"], record["clean_accuracy"],
                              subject.card)
            if hint:
                c["hint"] = hint
    if command is None:
        command = evaluate_command(_own_flags(subject, eps, eps_per_class, norm, suite, suite_file, n, seed,
                                              batch_size, given_out, adaptations, precision, graphs,
                                              shares), ignore_recorded=ignore_recorded)
    if record["recommended_adaptation"]:
        record["adaptive_command"] = adaptive_command(command, [*adaptations, *record["recommended_adaptation"]])
    record["seconds"] = time.perf_counter() - started  # the whole step: suite, checks and certificates
    record["summary"] = summary(record, command)
    if ev.x_adv is not None:  # evaluated in chunks: each chunk's folder holds its examples
        save_examples(out, x, ev, budgets)
    write_json(out / rundir.RESULT_FILE, record)
    write_csvs(out, record)
    return record


def _record(subject: "Subject", suite: str, norm: str, ev, checks: Checks, per_class, seconds: float) -> EvaluateRecord:
    """The `advlab evaluate --json` object, before the certified rows and the summary.

    `seconds` is the whole step's wall time; `suite_seconds` and `passes` the suite's attacks alone (comparable
    with AutoAttack), `checks_seconds` and `checks_passes` the gradient-masking checks on `check_n` points."""
    record: EvaluateRecord = {"suite": suite, "norm": norm, "n": len(ev.y), "clean_accuracy": ev.clean_accuracy(),
              "seconds": seconds, "suite_seconds": ev.seconds, "checks_seconds": checks.seconds,
              "check_n": checks.n, "attack_seconds": ev.attack_seconds,
              "verdict": verdict(checks) if checks else "not checked",
              "results": ev.results(), "confidence_clean_mistakes": ev.confidence()["clean_mistakes"],
              "adversarial_confusion": ev.adversarial_confusion(), "classes": list(subject.data.classes),
              "checks": [c.as_dict() for c in checks], **subject.record(), "passes": ev.passes,
              "checks_passes": checks.passes, "world_size": distributed.world_size(), "precision": ev.precision}
    if ev.oom_batch_sizes:
        record["batch_size_after_oom"] = ev.oom_batch_sizes
    if per_class is not None:
        record["eps_per_class"] = per_class
    return record


CERTIFY_METHODS = ("auto", "ibp", "crown", "alpha-crown", "exact", "smoothing")


def check_certify(subject, norm: str, certify: bool | str | None, sigma: float | None,
                  timeout: float | None = None) -> str | None:
    """Before the evaluation: fail now on what would fail after it. Returns the certification method (None:
    no certificate)."""
    from ..certify.bracket import default_method
    if certify is False or certify is None:
        if sigma is not None:
            raise AdvlabError("`sigma` is an option of `certify=True` (randomized smoothing for `norm='l2'`); "
                              "add `certify=True`")
        if timeout is not None:
            raise AdvlabError("`timeout` is an option of `certify='exact'` (seconds per point); add `certify='exact'`")
        return None
    auto = certify is True or certify == "auto"
    if not auto and certify not in CERTIFY_METHODS:
        raise AdvlabError(f"`certify` must be True or one of {', '.join(CERTIFY_METHODS)}, got {certify!r}")
    if norm not in ("linf", "l2"):
        raise AdvlabError(f"`certify=True` has no certificate for `norm={norm!r}`; use `norm='linf'` (IBP, CROWN, "
                          "exact) or `norm='l2'` (randomized smoothing with `sigma`, CROWN)")
    method = default_method(norm) if auto else certify
    if timeout is not None and method != "exact":
        raise AdvlabError("`timeout` is an option of `certify='exact'` (seconds per point)")
    if method == "smoothing":
        if norm != "l2":
            raise AdvlabError("`certify='smoothing'` certifies l2 radii; use `norm='l2'`, or `certify='crown'` "
                              "for linf")
        if sigma is None:
            raise AdvlabError("`certify=True` with `norm='l2'` needs `sigma`: randomized smoothing certifies the "
                              "smoothed classifier, e.g. `sigma=0.25`" +
                              ("" if not auto else "; or `certify='crown'` certifies the model itself"))
        return method
    if sigma is not None:
        if auto:
            raise AdvlabError("`certify=True` with `norm='linf'` uses interval bound propagation; `sigma` is for "
                              "`norm='l2'`")
        raise AdvlabError(f"`sigma` is an option of `certify='smoothing'`; `certify='{method}'` has no noise")
    if method in ("ibp", "exact") and norm != "linf":
        raise AdvlabError(f"`certify='{method}'` certifies linf balls; with `norm='l2'` use `certify='crown'` or "
                          "`certify='alpha-crown'` (the model itself) or `certify='smoothing'`")
    if method == "ibp":
        from ..certify import check_ibp_supported
        check_ibp_supported(subject.model)
    else:
        from ..certify import check_crown_supported
        check_crown_supported(subject.model, method)
    return method


def adaptive_command(command: str, adaptations: Sequence[str]) -> str:
    """The reproducing command with `--adaptive A,B` (replacing any --adaptive it has); its --out, if any, dropped
    so the adapted evaluation gets its own folder."""
    parts = shlex.split(command)
    kept, skip = [], False
    for part in parts:
        if skip:
            skip = False
            continue
        if part in ("--adaptive", "--out"):
            skip = True
            continue
        kept.append(part)
    return " ".join(shlex.quote(p) for p in [*kept, "--adaptive", ",".join(adaptations)])


def _checks(model, subject, x, y, budgets, per_class, ev, norm: str, seed: int, check_n: int, log: Log) -> Checks:
    """x: the first check_n points (or all, when there are fewer); `model`: what the suite attacked."""
    log(f"gradient-masking checks on {min(check_n, len(y))} points ...")
    check_eps = budgets if per_class is None else sorted(set(per_class))
    # The convergence check compares a stronger attack with what this evaluation reported.
    reported = None if per_class is not None else {e: robust[:check_n] for e, robust in zip(ev.eps, ev.robust)}
    return run_checks(model, x[:check_n], y[:check_n], check_eps, norm=norm, bounds=subject.data.bounds,
                      seed=seed, reported_robust=reported, progress=log)


def summary(record: dict[str, Any], command: str) -> dict[str, Any]:
    """RobustBench-style: what one line of a leaderboard needs, and the command that reproduces it."""
    return {"clean_accuracy": record["clean_accuracy"], "threat": record["norm"],
            "eps": [r["eps"] for r in record["results"]],
            "robust_accuracy": [r["robust_accuracy"] for r in record["results"]],
            "ci95": [r["ci95"] for r in record["results"]], "n": record["n"], "suite": record["suite"],
            "passes": record["passes"], "seconds": record["seconds"], "suite_seconds": record["suite_seconds"],
            "checks_seconds": record["checks_seconds"], "checks_passes": record["checks_passes"],
            "device": record["device"], "command": command}


def checks_dominate(record: dict[str, Any]) -> bool:
    """Whether the gradient-masking checks took longer than the suite's attacks (then the output says what
    they cost and how to bound them)."""
    return float(record.get("checks_seconds") or 0) > float(record.get("suite_seconds") or 0)


def evaluate_command(flags: dict[str, Any], repeated: dict[str, Sequence[str]] | None = None,
                     ignore_recorded: bool = False) -> str:
    """The `advlab evaluate` command line for these settings (resolved defaults included): `flags` maps each
    of COMMAND_FLAGS to its value as typed (None: left out; `device` as asked, e.g. "cuda", left out when
    "auto"), `repeated` each of COMMAND_REPEATED to its KEY=VALUE items. Files and folders (PATH_FLAGS, and the
    file of a FILE.py:FUNCTION model) are given by their absolute paths, as the card records the weights, so the
    command runs from any folder."""
    parts = ["advlab", "evaluate"]
    for key in COMMAND_FLAGS:
        value = flags.get(key)
        if value is None or (key == "device" and str(value).strip().lower() == "auto") or \
                (key == "precision" and value == "fp32") or (key == "graphs" and not value):
            continue
        if key == "graphs":
            parts.append("--graphs")
            continue
        if key in PATH_FLAGS:
            value = Path(value).expanduser().resolve()
        elif key == "model":
            source, sep, name = str(value).rpartition(":")
            if sep and source.endswith(".py"):
                value = f"{Path(source).expanduser().resolve()}:{name}"
        parts += [f"--{key.replace('_', '-')}", shlex.quote(str(value))]
    for key in COMMAND_REPEATED:
        for value in (repeated or {}).get(key) or []:
            parts += [f"--{key.replace('_', '-')}", shlex.quote(value)]
    if ignore_recorded:
        parts.append("--ignore-recorded")
    return " ".join(parts)


def _own_flags(subject, eps, eps_per_class, norm, suite, suite_file, n, seed, batch_size, out,
               adaptations=(), precision="fp32", graphs=False, shares=None) -> dict[str, Any]:
    """evaluate_command's flags for an evaluation called from Python (the demo, reproduce). `--out`: with a run
    directory, the evaluation's folder the caller gave (None: the default); with an external model, its run
    directory (where `--out` puts it). No `--device`: a Subject holds it resolved, and auto finds it."""
    external = subject.card.get("kind") == "external"
    return {"run": None if external else str(subject.run_dir),
            "model": subject.model_record.get("spec") if external else None,
            "weights": subject.model_record.get("weights") if external else None,
            "model_dir": (subject.card["model"].get("zoo") or {}).get("model_dir") if external else None,
            "eps": None if eps is None else describe_budgets(eps, None), "eps_per_class": eps_per_class,
            "norm": norm, "suite": suite, "suite_file": suite_file, "adaptive": ",".join(adaptations) or None,
            "n": n, "seed": seed, "batch_size": batch_size, "precision": precision, "graphs": graphs, "shares": shares,
            "out": str(subject.run_dir) if external else None if out is None else str(out)}


def write_csvs(out: str | os.PathLike, record: dict[str, Any]) -> None:
    """curve.csv (robust accuracy and its interval per eps) and per_class.csv (per eps, per class)."""
    out = Path(out)
    write_csv(out / rundir.CURVE_CSV, ["eps", "robust_accuracy", "ci95_low", "ci95_high", "mean_wrong_confidence"],
              [[r["eps"], r["robust_accuracy"], *r["ci95"], r["mean_wrong_confidence"]] for r in record["results"]])
    write_csv(out / rundir.PER_CLASS_CSV, ["eps", *record["classes"]],
              [[r["eps"], *r["per_class"]] for r in record["results"]])

