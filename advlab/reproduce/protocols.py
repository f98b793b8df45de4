"""The protocols behind experiments/*.toml. Each takes its resolved settings and an output folder and
returns (measured quantities by key, info), where info holds the dataset actually used, labels for
anything that differs from the paper, and figures (paths relative to the output folder).

Each also takes `device` (a torch.device, or None for the CPU): models are trained and loaded there
(train_run/load_run), attacks run there, and every number comes back to the CPU."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, DataNotFoundError

Log = Callable[[str], None]


# -- helpers ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _offline():
    old = os.environ.get("ADVLAB_OFFLINE")
    os.environ["ADVLAB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ADVLAB_OFFLINE", None)
        else:
            os.environ["ADVLAB_OFFLINE"] = old


def pick_dataset(preferred: str, fallback: str | None, data_dir: str | None) -> tuple[Any, str]:
    """Load `preferred` from local files (never downloading); else `fallback`, with a note saying so."""
    from ..data import load_dataset

    try:
        with _offline():
            return load_dataset(preferred, data_dir=data_dir), ""
    except DataNotFoundError:
        if not fallback or fallback == preferred:
            raise
    ds = load_dataset(fallback, data_dir=data_dir)
    return ds, (f"{preferred} files were not found, so this ran on {fallback} with the same protocol: the published "
                f"numbers are for {preferred}, ours for {fallback}")


def _train(name: str, model: str, out: Path, s: dict[str, Any], ds_name: str, *, epochs: int, seed: int = 0,
           model_kwargs=None, defense: str = "none", defense_kwargs=None, data_dir=None, progress=True,
           log: Log | None = None, device=None):
    from ..defenses.run import train_run
    from ..defenses.training import TrainConfig
    from ..runs import load_run

    if log:
        log(f"  training {name}: {model}" + ("" if defense == "none" else f" + {defense}") + f", {epochs} epochs")
    record = train_run(ds_name, model, out / "runs" / name, data_dir=data_dir, model_kwargs=model_kwargs or {},
                       defense=defense, defense_kwargs=defense_kwargs or {}, overwrite=True, progress=progress,
                       log=None, config=TrainConfig(epochs=epochs, lr=s.get("lr", 3e-3),
                                                    batch_size=s.get("batch_size", 128), seed=seed), device=device)
    model_, _ = load_run(out / "runs" / name, device=device)
    return model_, record


def _clean_accuracy(model, x, y) -> float:
    from ..predict import accuracy
    return accuracy(model, x, y)  # batches on the model's device, the answer on the CPU


def _fgsm(model, x, y, eps: float, bounds, rbf: bool = False) -> dict[str, float]:
    """FGSM error and the mean confidence of the wrong answers (RBF: the unit's own output exp(logit))."""
    from ..attacks import FGSM

    result = FGSM("linf")(model, x, y, [eps], bounds=bounds)
    wrong = ~result.correct[0]
    if rbf:
        conf = result.logits[0].amax(1).exp()
    else:
        conf = result.logits[0].softmax(1).amax(1)
    return {"error": 1 - result.robust_accuracy()[0],
            "confidence": conf[wrong].mean().item() if wrong.any() else float("nan"),
            "clean_error": 1 - result.clean_accuracy(), "result": result}


# -- blobs -------------------------------------------------------------------------------------------
BLOBS = {"eps": [0.0, 0.2, 0.5], "n": 10000, "separation": 2.0, "sigma": 0.5, "weight_decay": 1e-4, "seed": 0}


def blobs(s: dict[str, Any], out: Path, *, device=None, **_) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..analysis.blobs import blobs_picture

    record = blobs_picture([float(e) for e in s["eps"]], out=out, weight_decay=s["weight_decay"], device=device,
                           dataset_kwargs={"n": s["n"], "separation": s["separation"], "sigma": s["sigma"],
                                           "seed": s["seed"]})
    measured: dict[str, Any] = {}
    for r in record["results"]:
        e = f"{r['eps']:g}"
        measured[f"error_eps{e}"] = r["measured_error"]
        measured[f"predicted_eps{e}"] = r["predicted_error"]
        measured[f"best_linear_eps{e}"] = r["bayes_linear_error"]
    measured["test_points"] = record["results"][0]["n"]
    return measured, {"dataset": "blobs", "figures": record.get("figures", {})}


# -- Goodfellow et al. 2015 -------------------------------------------------------------------------------
GOODFELLOW = {"dataset": "mnist", "fallback": "fashion-mnist", "eps": 0.25, "clip": False, "n_test": None,
              "lr": 3e-3, "batch_size": 128, "softmax_epochs": 5, "maxout_epochs": 5, "maxout_units": 240,
              "maxout_pieces": 5, "dropout": 0.5, "adv_epochs": 5, "alpha": 0.5, "rbf_epochs": 5, "rbf_beta": 1.0,
              "noise_epochs": 5, "ensemble_members": 3, "ensemble_epochs": 3, "seed": 0}


def goodfellow2015(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
                   device=None) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..evaluate.transfer import ensemble_transfer, transfer_matrix
    from ..attacks import FGSM

    log = log or (lambda m: None)
    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    x, y = ds.test_subset(s["n_test"])
    eps = float(s["eps"])
    bounds = ds.bounds if s["clip"] else None  # the paper does not clip to [0, 1]
    maxout_kwargs = {"units": s["maxout_units"], "pieces": s["maxout_pieces"], "dropout": s["dropout"]}
    common = dict(data_dir=data_dir, progress=progress, log=log, device=device)
    m: dict[str, Any] = {}

    softmax, _ = _train("softmax", "softmax", out, s, ds.name, epochs=s["softmax_epochs"], seed=s["seed"], **common)
    r = _fgsm(softmax, x, y, eps, bounds)
    m.update(softmax_clean_error=r["clean_error"], softmax_fgsm_error=r["error"], softmax_fgsm_confidence=r["confidence"])

    maxout, _ = _train("maxout", "maxout", out, s, ds.name, epochs=s["maxout_epochs"], seed=s["seed"],
                       model_kwargs=maxout_kwargs, **common)
    r = _fgsm(maxout, x, y, eps, bounds)
    m.update(maxout_clean_error=r["clean_error"], maxout_fgsm_error=r["error"], maxout_fgsm_confidence=r["confidence"])
    figures = {}
    res = r["result"]
    fooled = (~res.correct[0] & res.clean_correct).nonzero().flatten()[:8]
    if len(fooled):
        from ..plotting import adversarial_grid
        probs = res.logits[0][fooled].softmax(1)
        adversarial_grid(x[fooled], res.x_adv[0][fooled], y[fooled], probs.argmax(1), probs.amax(1), ds.classes,
                         out / "maxout_fgsm.png", title=f"maxout, FGSM eps {eps:g} ({ds.name})")
        figures["maxout FGSM examples"] = "maxout_fgsm.png"

    adv, _ = _train("maxout-adversarial", "maxout", out, s, ds.name, epochs=s["adv_epochs"], seed=s["seed"],
                    model_kwargs=maxout_kwargs, defense="goodfellow",
                    defense_kwargs={"eps": eps, "alpha": s["alpha"]}, **common)
    r = _fgsm(adv, x, y, eps, bounds)
    m.update(adv_clean_error=r["clean_error"], adv_fgsm_error=r["error"], adv_fgsm_confidence=r["confidence"])
    m["clean_error_change"] = m["adv_clean_error"] - m["maxout_clean_error"]
    m["fgsm_error_change"] = m["adv_fgsm_error"] - m["maxout_fgsm_error"]

    log("  transfer between the standard and the adversarially trained maxout network")
    t = transfer_matrix({"standard": maxout, "adversarial": adv}, x, y, [eps], FGSM("linf"), bounds=bounds)
    m["transfer_standard_to_adversarial"] = t.error["standard"]["adversarial"][0]
    m["transfer_adversarial_to_standard"] = t.error["adversarial"]["standard"][0]
    from ..io import write_json
    write_json(out / "transfer" / "transfer.json", {**t.as_dict(), "attack": "fgsm", "norm": "linf", "n": len(y),
                                                    "dataset": ds.name})

    rbf, _ = _train("rbf", "rbf", out, s, ds.name, epochs=s["rbf_epochs"], seed=s["seed"],
                    model_kwargs={"beta": s["rbf_beta"]}, **common)
    r = _fgsm(rbf, x, y, eps, bounds, rbf=True)
    from ..predict import predict_logits
    clean_logits = predict_logits(rbf, x)  # on the CPU
    clean_conf = clean_logits.amax(1).exp()
    clean_ok = clean_logits.argmax(1) == y
    m.update(rbf_clean_error=r["clean_error"], rbf_fgsm_error=r["error"], rbf_fgsm_confidence=r["confidence"],
             rbf_clean_confidence=clean_conf[clean_ok].mean().item() if clean_ok.any() else float("nan"))

    for kind in ("sign", "uniform"):
        net, _ = _train(f"maxout-noise-{kind}", "maxout", out, s, ds.name, epochs=s["noise_epochs"], seed=s["seed"],
                        model_kwargs=maxout_kwargs, defense=f"noise-{kind}", defense_kwargs={"eps": eps}, **common)
        r = _fgsm(net, x, y, eps, bounds)
        m[f"noise_{kind}_fgsm_error"], m[f"noise_{kind}_fgsm_confidence"] = r["error"], r["confidence"]

    members = {"maxout": maxout}
    for k in range(1, s["ensemble_members"]):
        members[f"member{k}"], _ = _train(f"ensemble-{k}", "maxout", out, s, ds.name, epochs=s["ensemble_epochs"],
                                          seed=s["seed"] + k, model_kwargs=maxout_kwargs, **common)
    log(f"  ensemble of {len(members)}: attacked as a whole and through one member")
    e = ensemble_transfer(members, x, y, [eps], FGSM("linf"), bounds=bounds)
    m["ensemble_whole_error"] = e["attack_ensemble"][0]
    m["ensemble_member_error"] = e["attack_one_member_mean"][0]

    scale = (f"{len(y)} test points; softmax {s['softmax_epochs']}, maxout {s['maxout_epochs']}, adversarial "
             f"{s['adv_epochs']}, RBF {s['rbf_epochs']}, noise {s['noise_epochs']} epochs; ensemble of "
             f"{s['ensemble_members']} maxout networks (the paper: 12) - scaled to CPU time")
    return m, {"dataset": ds.name, "note": note, "scale": scale, "figures": figures}


# -- Wong, Rice, Kolter 2020 -------------------------------------------------------------------------------
WONG = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "eps": 0.1, "model": "cnn-small", "epochs": 5,
        "step": 1.25, "lr": 3e-3, "batch_size": 128, "n_eval": 1000, "pgd_steps": 50, "pgd_restarts": 1,
        "suite": "", "seed": 0}


def _robust(model, x, y, eps, bounds, attack: str, seed: int, **kwargs) -> float:
    from ..attacks import build_attack
    return build_attack(attack, norm="linf", seed=seed, **kwargs)(model, x, y, [eps], bounds=bounds).robust_accuracy()[0]


def _suite(model, x, y, eps, bounds, suite: str, seed: int) -> float:
    from ..evaluate import evaluate_robustness, get_suite
    ev = evaluate_robustness(model, x, y, [eps], get_suite(suite, None, norm="linf"), norm="linf", bounds=bounds,
                             seed=seed, progress=False)
    return ev.robust_accuracy()[0]


def wong2020(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
             device=None):
    log = log or (lambda m: None)
    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    x, y = ds.test_subset(s["n_eval"])
    eps = float(s["eps"])
    started = time.perf_counter()
    model, rec = _train("fgsm-rs", s["model"], out, s, ds.name, epochs=s["epochs"], seed=s["seed"], defense="fgsm-rs",
                        defense_kwargs={"eps": eps, "step": s["step"]}, data_dir=data_dir, progress=progress, log=log,
                        device=device)
    m: dict[str, Any] = {"train_seconds": time.perf_counter() - started}
    m["clean_accuracy"] = _clean_accuracy(model, x, y)
    log(f"  PGD-{s['pgd_steps']} x{s['pgd_restarts']} at eps {eps:g} on {len(y)} points")
    m["pgd_accuracy"] = _robust(model, x, y, eps, ds.bounds, "pgd", s["seed"], steps=s["pgd_steps"],
                                restarts=s["pgd_restarts"])
    m["fgsm_accuracy"] = _robust(model, x, y, eps, ds.bounds, "fgsm", s["seed"])
    m["collapsed"] = float(m["pgd_accuracy"] < 0.05)  # catastrophic overfitting
    if s["suite"]:
        log(f"  suite {s['suite']}")
        m["suite_accuracy"] = _suite(model, x, y, eps, ds.bounds, s["suite"], s["seed"])
    scale = (f"{s['model']}, {s['epochs']} epochs, evaluated on the first {len(y)} test points with "
             f"PGD-{s['pgd_steps']} x{s['pgd_restarts']} restarts (paper: 10)" +
             (f" and the '{s['suite']}' suite" if s["suite"] else "; no AutoAttack-style suite (set suite)"))
    return m, {"dataset": ds.name, "note": note, "scale": scale, "figures": {}}


# -- Madry et al. 2018 ------------------------------------------------------------------------------------
MADRY = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "eps": 0.1, "model": "cnn-small", "epochs": 3,
         "train_steps": 7, "lr": 3e-3, "batch_size": 128, "n_eval": 1000, "pgd_steps": 20, "strong_steps": 100,
         "strong_restarts": 2, "suite": "", "seed": 0}


def madry2018(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
              device=None):
    log = log or (lambda m: None)
    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    x, y = ds.test_subset(s["n_eval"])
    eps = float(s["eps"])
    model, _ = _train("pgd", s["model"], out, s, ds.name, epochs=s["epochs"], seed=s["seed"], defense="pgd",
                      defense_kwargs={"eps": eps, "steps": s["train_steps"]}, data_dir=data_dir, progress=progress,
                      log=log, device=device)
    m: dict[str, Any] = {}
    m["clean_accuracy"] = _clean_accuracy(model, x, y)
    m["fgsm_accuracy"] = _robust(model, x, y, eps, ds.bounds, "fgsm", s["seed"])
    log(f"  PGD-{s['pgd_steps']}, PGD-{s['strong_steps']} x{s['strong_restarts']} on {len(y)} points")
    m["pgd_accuracy"] = _robust(model, x, y, eps, ds.bounds, "pgd", s["seed"], steps=s["pgd_steps"])
    m["strong_accuracy"] = _robust(model, x, y, eps, ds.bounds, "pgd", s["seed"] + 1, steps=s["strong_steps"],
                                   restarts=s["strong_restarts"])
    m["pgd_minus_strong"] = m["pgd_accuracy"] - m["strong_accuracy"]
    m["fgsm_minus_pgd"] = m["fgsm_accuracy"] - m["pgd_accuracy"]
    if s["suite"]:
        log(f"  suite {s['suite']}")
        m["suite_accuracy"] = _suite(model, x, y, eps, ds.bounds, s["suite"], s["seed"])
        m["strong_minus_suite"] = m["strong_accuracy"] - m["suite_accuracy"]
    scale = (f"{s['model']} (paper: conv32-conv64-fc1024), PGD-{s['train_steps']} adversarial training for "
             f"{s['epochs']} epochs (paper: PGD-40, 100k steps), {len(y)} test points - scaled to CPU time")
    return m, {"dataset": ds.name, "note": note, "scale": scale, "figures": {}}


# -- choosing epsilon ---------------------------------------------------------------------------------------
EPSILON = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "per_class": 200, "n_test": 2000,
           "norms": ["linf", "l2"], "perceptibility_eps": [0.0, 0.05, 0.1, 0.2, 0.3], "seed": 0}


def epsilon_choice(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
                   device=None):
    from ..analysis.epsilon import analyze_distances
    from ..analysis.perceptibility import perceptibility

    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    record = analyze_distances(ds, per_class=s["per_class"], norms=list(s["norms"]), n_test=s["n_test"],
                               seed=s["seed"], out=out / "distances", progress=progress, device=device)
    p = perceptibility(ds, [float(e) for e in s["perceptibility_eps"]], None, seed=s["seed"], out=out / "perceptibility")
    m: dict[str, Any] = {}
    figures = {}
    for norm, e in record["norms"].items():
        m[f"suggested_{norm}"] = e["suggested_eps"]
        m[f"suggested_percentile_{norm}"] = e["suggested_eps_percentile"]
        m[f"one_nn_accuracy_{norm}"] = e["train_test_nn"]["one_nn_accuracy"]
        m[f"closer_than_itself_{norm}"] = len(e["closer_than_itself"])
        if "class_distance" in e.get("figures", {}):
            figures[f"{norm} class distances"] = f"distances/{Path(e['figures']['class_distance']).name}"
    grid = p.get("figures", {}).get("grid")
    if grid:
        figures["perceptibility"] = f"perceptibility/{Path(grid).name}"
    scale = f"{s['per_class']} training images per class, first {s['n_test']} test images"
    return m, {"dataset": ds.name, "note": note, "scale": scale, "figures": figures}


PROTOCOLS: dict[str, tuple[dict[str, Any], Callable]] = {
    "blobs": (BLOBS, blobs),
    "goodfellow2015": (GOODFELLOW, goodfellow2015),
    "wong2020": (WONG, wong2020),
    "madry2018": (MADRY, madry2018),
    "epsilon-choice": (EPSILON, epsilon_choice),
}

from .certified import COHEN, GOWAL, cohen2019, gowal2018  # noqa: E402  (they use the helpers above)

PROTOCOLS.update({"cohen2019": (COHEN, cohen2019), "gowal2018": (GOWAL, gowal2018)})


def defaults(experiment: str) -> dict[str, Any]:
    if experiment not in PROTOCOLS:
        raise ConfigError(f"unknown experiment protocol {experiment!r}; known: {', '.join(PROTOCOLS)}")
    return dict(PROTOCOLS[experiment][0])
