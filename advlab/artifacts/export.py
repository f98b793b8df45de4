"""An evaluation as RobustBench's leaderboard takes it: the step behind `advlab export robustbench`.

    from advlab.artifacts.export import export_robustbench
    record = export_robustbench("runs/my-wrn", "submission")
    # -> submission/NAME.json      RobustBench's model-info entry (robustbench.utils.ModelInfo's fields, with
    #                              `external`: advlab's robust accuracy, and a footnote naming the suite)
    #    submission/NAME.pt        the adversarial examples, one (N, C, H, W) tensor in test-set order
    #                              (the clean image where no attack broke the point), as a "new external
    #                              evaluation" asks for
    #    submission/NAME_log.txt   the per-attack log: which attack broke how many points, robust accuracy after each

The evaluation (RUN/eval/SUITE-NORM, from `advlab evaluate`) must follow the leaderboard's protocol:
CIFAR-10 Linf 8/255 or L2 0.5, CIFAR-100 Linf 8/255, ImageNet Linf 4/255, on the first 10,000 CIFAR test
points / RobustBench's 5,000 ImageNet images (its subset, with the zoo model's preprocessing), at the
threat of the model's leaderboard. Otherwise the export is refused,
unless `allow_partial`, which writes it with the entry's footnote saying how it departs.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import AdvlabError
from ..io import atomic_write, load_tensors, read_json, write_json
from ..runs import read_card
from ..version import __version__
from .. import rundir

# (dataset, norm) -> (eps, number of test points): RobustBench's leaderboards.
LEADERBOARDS = {("cifar10", "linf"): (8 / 255, 10_000), ("cifar10", "l2"): (0.5, 10_000),
                ("cifar100", "linf"): (8 / 255, 10_000), ("imagenet", "linf"): (4 / 255, 5_000)}
THREAT_NAMES = {"linf": "Linf", "l2": "L2"}
# The fields of robustbench.utils.ModelInfo, in its order, plus `external` (the leaderboard reads it before
# `autoattack_acc`: robustbench.utils.ACC_FIELDS). Accuracies are percentages as strings ("59.64").
ENTRY_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                "architecture", "eps", "clean_acc", "reported", "external", "footnote")
TO_FILL = ("link", "name", "authors", "venue", "reported")  # the paper's: advlab cannot know them
EPS_TOLERANCE = 1e-6


def export_robustbench(run: str | os.PathLike, out: str | os.PathLike | None = None, *, allow_partial: bool = False,
                       evaluation: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write RUN's evaluation as a RobustBench submission into `out` (default RUN/export/robustbench) and
    return the record `--json` prints: the files, the leaderboard, whether it is partial and why."""
    run = Path(run)
    card = read_card(run)
    eval_dir, result = _choose_evaluation(run, evaluation, card, allow_partial)
    dataset, norm = result["data"]["name"], result["norm"]
    if (dataset, norm) not in LEADERBOARDS:
        boards = ", ".join(f"{d} {THREAT_NAMES[t]}" for d, t in LEADERBOARDS)
        raise AdvlabError(f"{eval_dir} evaluates {dataset} at {norm}: RobustBench has no such leaderboard ({boards}); "
                          "nothing to export")
    eps_required, n_required = LEADERBOARDS[dataset, norm]
    index, departures = _protocol(result, card, eps_required, n_required)
    if departures and not allow_partial:
        raise AdvlabError(f"{eval_dir} does not follow RobustBench's {dataset} {THREAT_NAMES[norm]} protocol: "
                          f"{'; '.join(departures)}; evaluate again with it, or pass `allow_partial=True` to export "
                          "it marked as partial")
    x_adv = _examples(eval_dir, result, index, norm)
    name = _entry_name(run, card)
    out = Path(out) if out is not None else run / rundir.EXPORT_DIR / "robustbench"
    row = result["results"][index]
    entry = _entry(card, result, row, dataset, departures)
    paths = {"entry": out / rundir.robustbench_entry(name), "examples": out / rundir.robustbench_examples(name),
             "log": out / rundir.robustbench_log(name)}
    buffer = io.BytesIO()
    torch.save(x_adv.contiguous(), buffer)
    atomic_write(paths["examples"], buffer.getvalue())
    atomic_write(paths["log"], _log(card, result, row, dataset).encode())
    write_json(paths["entry"], entry)
    return {"name": name, "evaluation": str(eval_dir), **{k: str(v) for k, v in paths.items()},
            "leaderboard": {"dataset": dataset, "threat": THREAT_NAMES[norm], "eps": format_eps(eps_required),
                            "n": n_required},
            "partial": bool(departures), "departures": departures, "to_fill": [k for k in TO_FILL if not entry[k]]
            + (["additional_data"] if entry["additional_data"] is None else []), "entry_fields": entry}


def format_eps(eps: float) -> str:
    """As RobustBench writes budgets: "8/255" for a whole number of 255ths, else the number ("0.5")."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _choose_evaluation(run: Path, evaluation, card: dict, allow_partial: bool) -> tuple[Path, dict[str, Any]]:
    if evaluation is not None:
        folder = Path(evaluation)
        if not (folder / rundir.RESULT_FILE).is_file():
            raise AdvlabError(f"`evaluation={folder}` holds no {rundir.RESULT_FILE}: give a folder `advlab evaluate` "
                              f"wrote, such as {run / rundir.EVAL_DIR}/standard-linf")
        return folder, read_json(folder / rundir.RESULT_FILE)
    found = sorted(p.parent for p in (run / rundir.EVAL_DIR).glob(f"*/{rundir.RESULT_FILE}"))
    if not found:
        raise AdvlabError(f"{run} holds no evaluation ({run / rundir.EVAL_DIR} is empty): run `advlab evaluate --run "
                          f"{run} --eps 8/255` (the full test set) first")
    results = {folder: read_json(folder / rundir.RESULT_FILE) for folder in found}
    following = [f for f, r in results.items() if (r["data"]["name"], r["norm"]) in LEADERBOARDS and
                 not _protocol(r, card, *LEADERBOARDS[r["data"]["name"], r["norm"]])[1]]
    choice = following if following else (list(results) if allow_partial else [])
    if len(choice) == 1:
        return choice[0], results[choice[0]]
    if not choice:  # none follows the protocol: export the one there is, to say why not
        if len(results) == 1:
            return found[0], results[found[0]]
        choice = list(results)
    raise AdvlabError(f"{run} holds {len(choice)} evaluations that could be exported ("
                      f"{', '.join(f.name for f in choice)}); choose one with `evaluation=DIR`")


def _protocol(result: dict[str, Any], card: dict[str, Any], eps_required: float,
              n_required: int) -> tuple[int, list[str]]:
    """(the index of the result row to export, how the evaluation departs from the leaderboard's protocol)."""
    departures = []
    eps = [r["eps"] for r in result["results"]]
    matches = [i for i, e in enumerate(eps) if abs(e - eps_required) <= EPS_TOLERANCE]
    if matches:
        index = matches[0]
    elif len(eps) == 1:
        index = 0
        departures.append(f"eps {format_eps(eps[0])}, not {format_eps(eps_required)}")
    else:
        raise AdvlabError(f"the evaluation has eps {', '.join(map(format_eps, eps))} and none is the leaderboard's "
                          f"{format_eps(eps_required)}: which one to export is not clear; evaluate at "
                          f"{format_eps(eps_required)}")
    if result.get("eps_per_class"):
        departures.append("one budget per class, not one for every point")
    if result["n"] != n_required:
        departures.append(f"{result['n']:,} test points, not the first {n_required:,}")
    data = result["data"]
    if data["name"] == "imagenet" and data.get("subset") != "robustbench":
        departures.append("not RobustBench's 5,000 ImageNet evaluation images (dataset imagenet with subset "
                          "robustbench)")
    zoo = card.get("model", {}).get("zoo") or {}
    if zoo.get("preprocess") and data.get("preprocess") != zoo["preprocess"]:
        departures.append(f"images preprocessed with {data.get('preprocess')}, RobustBench evaluates this model with "
                          f"{zoo['preprocess']}")
    if zoo and (zoo.get("dataset"), zoo.get("norm")) != (result["data"]["name"], result["norm"]):
        departures.append(f"the model is from RobustBench's {zoo.get('dataset')} {zoo.get('threat')} leaderboard, the "
                          f"evaluation is {result['data']['name']} {THREAT_NAMES.get(result['norm'], result['norm'])}")
    return index, departures


def _examples(eval_dir: Path, result: dict[str, Any], index: int, norm: str) -> torch.Tensor:
    """(N, C, H, W): the example that broke each point at the exported eps, the clean image where none did;
    checked against the record (robust points) and the budget before anything is written. An evaluation in
    chunks (images read on demand) holds its examples chunk by chunk, in order."""
    files = [eval_dir / rundir.EXAMPLES_FILE] if (eval_dir / rundir.EXAMPLES_FILE).is_file() else \
        sorted((eval_dir / rundir.CHUNKS_DIR).glob(f"*/{rundir.EXAMPLES_FILE}"))
    if not files:
        raise AdvlabError(f"{eval_dir} holds no {rundir.EXAMPLES_FILE} (an evaluation by an older advlab?); evaluate "
                          "again to save the examples")
    row = result["results"][index]
    parts, robust, outside, largest = [], 0, 0, 0.0
    for path in files:
        t = load_tensors(path)
        x, x_adv, broken_by = t["x"], t["x_adv"][index], t["broken_by"][index]
        robust += int((broken_by < 0).sum())
        delta = (x_adv - x).flatten(1).double()
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1) if norm == "l2" else delta.abs().sum(1)
        outside += int((size > row["eps"] + 1e-5).sum())
        largest = max(largest, size.max().item() if len(size) else 0.0)
        parts.append(x_adv)
        del t, x, delta
    x_adv = torch.cat(parts)
    if len(x_adv) != result["n"] or robust != round(row["robust_accuracy"] * result["n"]):
        raise AdvlabError(f"the examples in {eval_dir} do not match its {rundir.RESULT_FILE} ({robust} robust points "
                          f"of {len(x_adv)}, the record says {row['robust_accuracy']:.4f} of {result['n']}); evaluate "
                          "again")
    if outside:
        raise AdvlabError(f"{eval_dir}: {outside} example(s) lie outside the {norm} ball of {row['eps']:g} (largest "
                          f"{largest:.6g}); this is a bug, please report it")
    return x_adv


def _entry_name(run: Path, card: dict[str, Any]) -> str:
    zoo = card.get("model", {}).get("zoo") or {}
    name = zoo.get("name") or run.resolve().name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def _entry(card: dict[str, Any], result: dict[str, Any], row: dict[str, Any], dataset: str,
           departures: list[str]) -> dict[str, Any]:
    """RobustBench's model-info JSON: accuracies in percent with two decimals, as strings."""
    model = card.get("model", {})
    external = card.get("kind") == "external"
    suite = result["suite"]
    attacks = [k for k in row["broken_by"] if k != "clean mistake"]
    footnote = (f"Evaluated with advlab {__version__} (suite {suite}: {', '.join(attacks) or 'no attack'}; "
                f"{result['n']:,} points; robust accuracy {100 * row['robust_accuracy']:.2f}%, 95% CI "
                f"[{100 * row['ci95'][0]:.2f}, {100 * row['ci95'][1]:.2f}]).")
    if departures:
        footnote = f"PARTIAL evaluation, not the leaderboard's protocol: {'; '.join(departures)}. " + footnote
    architecture = model.get("zoo", {}).get("name") if model.get("zoo") else model.get("spec") if external else \
        model.get("name")
    entry = {"link": "", "name": "", "authors": "", "additional_data": None if external else False,
             "number_forward_passes": 1, "dataset": dataset, "venue": "", "architecture": architecture or "",
             "eps": format_eps(row["eps"]), "clean_acc": f"{100 * result['clean_accuracy']:.2f}", "reported": "",
             "external": f"{100 * row['robust_accuracy']:.2f}", "footnote": footnote}
    assert tuple(entry) == ENTRY_FIELDS
    return entry


def _log(card: dict[str, Any], result: dict[str, Any], row: dict[str, Any], dataset: str) -> str:
    n = result["n"]
    spec = result.get("model", {}).get("spec") or card.get("model", {}).get("name")
    lines = [f"advlab {__version__}: {spec} on the first {n:,} {dataset} test points, {result['norm']} eps "
             f"{format_eps(row['eps'])} ({row['eps']:.6g}), suite {result['suite']}"]
    clean = round(result["clean_accuracy"] * n)
    lines.append(f"clean: {clean}/{n} correct, accuracy {100 * result['clean_accuracy']:.2f}%")
    left = clean
    for attack, count in row["broken_by"].items():
        if attack == "clean mistake":
            continue
        left -= count
        lines.append(f"{attack}: broke {count}, robust accuracy after it {100 * left / n:.2f}%")
    if not math.isclose(left / n, row["robust_accuracy"], abs_tol=0.5 / n):
        raise AdvlabError(f"the evaluation's per-attack counts ({left} left) do not add up to its robust accuracy "
                          f"{row['robust_accuracy']}; evaluate again")
    lines.append(f"robust accuracy: {100 * row['robust_accuracy']:.2f}% ({left}/{n}), 95% CI "
                 f"[{100 * row['ci95'][0]:.2f}, {100 * row['ci95'][1]:.2f}]")
    return "\n".join(lines) + "\n"
