"""The protocols behind experiments/*.toml. Each takes its resolved settings and an output folder and
returns (measured quantities by key, info), where info holds the dataset actually used, labels for
anything that differs from the paper, and figures (paths relative to the output folder).

Each also takes `device` (a torch.device, or None for the CPU): models are trained and loaded there
(train_run/load_run), attacks run there, and every number comes back to the CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import rundir
from ..errors import ConfigError
from .certified import COHEN, GOWAL, cohen2019, gowal2018
from .steps import Log, pick_dataset, train  # noqa: F401  (pick_dataset: callers import it from here)


# -- helpers ----------------------------------------------------------------------------------------
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
              "noise_epochs": 3, "ensemble_members": 3, "ensemble_epochs": 3, "seed": 0}


@dataclass
class _Goodfellow:
    """What every step of goodfellow2015 shares: the settings, the test points, eps and how models train."""
    s: dict[str, Any]
    out: Path
    ds: Any
    x: Any
    y: Any
    eps: float
    bounds: Any  # None unless clip: the paper does not clip to [0, 1]
    common: dict[str, Any]

    @property
    def maxout(self) -> dict[str, Any]:
        return {"units": self.s["maxout_units"], "pieces": self.s["maxout_pieces"], "dropout": self.s["dropout"]}

    def train(self, name: str, model: str, epochs: str, **kwargs):
        """`model` trained for the settings' `epochs` into OUT/runs/NAME (kwargs: model and defense options)."""
        kwargs.setdefault("seed", self.s["seed"])
        return train(name, model, self.out, self.s, self.ds.name, epochs=self.s[epochs], **kwargs, **self.common)[0]

    def fgsm(self, net, rbf: bool = False) -> dict[str, Any]:
        return _fgsm(net, self.x, self.y, self.eps, self.bounds, rbf=rbf)

    def errors(self, prefix: str, net) -> tuple[dict[str, float], Any]:
        """({PREFIX_clean_error, PREFIX_fgsm_error, PREFIX_fgsm_confidence}, the FGSM AttackResult)."""
        r = self.fgsm(net)
        return {f"{prefix}_clean_error": r["clean_error"], f"{prefix}_fgsm_error": r["error"],
                f"{prefix}_fgsm_confidence": r["confidence"]}, r["result"]


def goodfellow2015(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
                   device=None) -> tuple[dict[str, Any], dict[str, Any]]:
    log = log or (lambda m: None)
    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    x, y = ds.test_subset(s["n_test"])
    g = _Goodfellow(s, out, ds, x, y, float(s["eps"]), ds.bounds if s["clip"] else None,
                    dict(data_dir=data_dir, progress=progress, log=log, device=device))
    m: dict[str, Any] = g.errors("softmax", g.train("softmax", "softmax", "softmax_epochs"))[0]
    maxout = g.train("maxout", "maxout", "maxout_epochs", model_kwargs=g.maxout)
    row, result = g.errors("maxout", maxout)
    m.update(row)
    figures = _maxout_examples(g, result)
    adv = g.train("maxout-adversarial", "maxout", "adv_epochs", model_kwargs=g.maxout, defense="goodfellow",
                  defense_kwargs={"eps": g.eps, "alpha": s["alpha"]})
    m.update(g.errors("adv", adv)[0])
    m["clean_error_change"] = m["adv_clean_error"] - m["maxout_clean_error"]
    m["fgsm_error_change"] = m["adv_fgsm_error"] - m["maxout_fgsm_error"]
    log("  transfer between the standard and the adversarially trained maxout network")
    m.update(_transfer(g, maxout, adv))
    m.update(_rbf(g))
    m.update(_noise(g))
    m.update(_ensemble(g, maxout, log))
    scale = (f"{len(y)} test points; softmax {s['softmax_epochs']}, maxout {s['maxout_epochs']}, adversarial "
             f"{s['adv_epochs']}, RBF {s['rbf_epochs']}, noise {s['noise_epochs']} epochs; ensemble of "
             f"{s['ensemble_members']} maxout networks (the paper: 12) - scaled to CPU time")
    return m, {"dataset": ds.name, "note": note, "scale": scale, "figures": figures}


def _maxout_examples(g: _Goodfellow, res) -> dict[str, str]:
    """A grid of the maxout network's FGSM mistakes (up to 8), as the paper's figure 1."""
    fooled = (~res.correct[0] & res.clean_correct).nonzero().flatten()[:8]
    if not len(fooled):
        return {}
    from ..plotting import adversarial_grid
    probs = res.logits[0][fooled].softmax(1)
    adversarial_grid(g.x[fooled], res.x_adv[0][fooled], g.y[fooled], probs.argmax(1), probs.amax(1), g.ds.classes,
                     g.out / "maxout_fgsm.png", title=f"maxout, FGSM eps {g.eps:g} ({g.ds.name})")
    return {"maxout FGSM examples": "maxout_fgsm.png"}


def _transfer(g: _Goodfellow, standard, adversarial) -> dict[str, float]:
    from ..artifacts.transfer import transfer_run
    from ..attacks import FGSM

    t = transfer_run({"standard": standard, "adversarial": adversarial}, g.x, g.y, [g.eps], FGSM("linf"),
                     bounds=g.bounds, out=g.out / rundir.TRANSFER_DIR, dataset=g.ds.name)
    return {"transfer_standard_to_adversarial": t["error"]["standard"]["adversarial"][0],
            "transfer_adversarial_to_standard": t["error"]["adversarial"]["standard"][0]}


def _rbf(g: _Goodfellow) -> dict[str, float]:
    """The shallow RBF network: FGSM fools it less, and it is not confident when it is wrong."""
    from ..predict import predict_logits

    rbf = g.train("rbf", "rbf", "rbf_epochs", model_kwargs={"beta": g.s["rbf_beta"]})
    r = g.fgsm(rbf, rbf=True)
    clean_logits = predict_logits(rbf, g.x)  # on the CPU
    clean_conf = clean_logits.amax(1).exp()
    clean_ok = clean_logits.argmax(1) == g.y
    return {"rbf_clean_error": r["clean_error"], "rbf_fgsm_error": r["error"], "rbf_fgsm_confidence": r["confidence"],
            "rbf_clean_confidence": clean_conf[clean_ok].mean().item() if clean_ok.any() else float("nan")}


def _noise(g: _Goodfellow) -> dict[str, float]:
    """The controls: training on random +-eps sign noise or uniform noise does not resist FGSM."""
    m = {}
    for kind in ("sign", "uniform"):
        net = g.train(f"maxout-noise-{kind}", "maxout", "noise_epochs", model_kwargs=g.maxout,
                      defense=f"noise-{kind}", defense_kwargs={"eps": g.eps})
        r = g.fgsm(net)
        m[f"noise_{kind}_fgsm_error"], m[f"noise_{kind}_fgsm_confidence"] = r["error"], r["confidence"]
    return m


def _ensemble(g: _Goodfellow, maxout, log: Log) -> dict[str, float]:
    """An ensemble of maxout networks, attacked as a whole and through one member."""
    from ..attacks import FGSM
    from ..evaluate.transfer import ensemble_transfer

    members = {"maxout": maxout}
    for k in range(1, g.s["ensemble_members"]):
        members[f"member{k}"] = g.train(f"ensemble-{k}", "maxout", "ensemble_epochs", seed=g.s["seed"] + k,
                                        model_kwargs=g.maxout)
    log(f"  ensemble of {len(members)}: attacked as a whole and through one member")
    e = ensemble_transfer(members, g.x, g.y, [g.eps], FGSM("linf"), bounds=g.bounds)
    return {"ensemble_whole_error": e["attack_ensemble"][0], "ensemble_member_error": e["attack_one_member_mean"][0]}


# -- Wong, Rice, Kolter 2020 -------------------------------------------------------------------------------
WONG = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "eps": 0.1, "model": "cnn-small", "epochs": 5,
        "step": 1.25, "lr": 3e-3, "batch_size": 128, "n_eval": 1000, "pgd_steps": 50, "pgd_restarts": 1,
        "suite": "", "seed": 0}


@dataclass
class _Trained:
    """A model adversarially trained at eps, and the first n_eval test points it is measured on."""
    ds: Any
    note: str
    x: Any
    y: Any
    eps: float
    model: Any
    seconds: float  # training

    def robust(self, attack: str, seed: int, **kwargs) -> float:
        """Robust accuracy under one Linf attack at eps."""
        from ..attacks import build_attack
        attack_ = build_attack(attack, norm="linf", seed=seed, **kwargs)
        return attack_(self.model, self.x, self.y, [self.eps], bounds=self.ds.bounds).robust_accuracy()[0]

    def suite(self, suite: str, seed: int) -> float:
        """Robust accuracy under an evaluation suite at eps (the worst case per point)."""
        from ..evaluate import evaluate_robustness, get_suite
        ev = evaluate_robustness(self.model, self.x, self.y, [self.eps], get_suite(suite, None, norm="linf"),
                                 norm="linf", bounds=self.ds.bounds, seed=seed, progress=False)
        return ev.robust_accuracy()[0]


def _robustly_trained(s: dict[str, Any], out: Path, defense: str, defense_kwargs: dict[str, Any], *, data_dir,
                      log: Log, progress: bool, device) -> _Trained:
    """The data (the first n_eval test points), eps, and the model trained with `defense` at eps into
    OUT/runs/DEFENSE."""
    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    x, y = ds.test_subset(s["n_eval"])
    eps = float(s["eps"])
    started = time.perf_counter()
    model, _ = train(defense, s["model"], out, s, ds.name, epochs=s["epochs"], seed=s["seed"], defense=defense,
                     defense_kwargs={"eps": eps, **defense_kwargs}, data_dir=data_dir, progress=progress, log=log,
                     device=device)
    return _Trained(ds, note, x, y, eps, model, time.perf_counter() - started)


def wong2020(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
             device=None):
    log = log or (lambda m: None)
    t = _robustly_trained(s, out, "fgsm-rs", {"step": s["step"]}, data_dir=data_dir, log=log, progress=progress,
                          device=device)
    m: dict[str, Any] = {"train_seconds": t.seconds, "clean_accuracy": _clean_accuracy(t.model, t.x, t.y)}
    log(f"  PGD-{s['pgd_steps']} x{s['pgd_restarts']} at eps {t.eps:g} on {len(t.y)} points")
    m["pgd_accuracy"] = t.robust("pgd", s["seed"], steps=s["pgd_steps"], restarts=s["pgd_restarts"])
    m["fgsm_accuracy"] = t.robust("fgsm", s["seed"])
    m["collapsed"] = float(m["pgd_accuracy"] < 0.05)  # catastrophic overfitting
    if s["suite"]:
        log(f"  suite {s['suite']}")
        m["suite_accuracy"] = t.suite(s["suite"], s["seed"])
    scale = (f"{s['model']}, {s['epochs']} epochs, evaluated on the first {len(t.y)} test points with "
             f"PGD-{s['pgd_steps']} x{s['pgd_restarts']} restarts (paper: 10)" +
             (f" and the '{s['suite']}' suite" if s["suite"] else "; no AutoAttack-style suite (set suite)"))
    return m, {"dataset": t.ds.name, "note": t.note, "scale": scale, "figures": {}}


# -- Madry et al. 2018 ------------------------------------------------------------------------------------
MADRY = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "eps": 0.1, "model": "cnn-small", "epochs": 3,
         "train_steps": 7, "lr": 3e-3, "batch_size": 128, "n_eval": 1000, "pgd_steps": 20, "strong_steps": 100,
         "strong_restarts": 2, "suite": "", "seed": 0}


def madry2018(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
              device=None):
    log = log or (lambda m: None)
    t = _robustly_trained(s, out, "pgd", {"steps": s["train_steps"]}, data_dir=data_dir, log=log, progress=progress,
                          device=device)
    m: dict[str, Any] = {"clean_accuracy": _clean_accuracy(t.model, t.x, t.y),
                         "fgsm_accuracy": t.robust("fgsm", s["seed"])}
    log(f"  PGD-{s['pgd_steps']}, PGD-{s['strong_steps']} x{s['strong_restarts']} on {len(t.y)} points")
    m["pgd_accuracy"] = t.robust("pgd", s["seed"], steps=s["pgd_steps"])
    m["strong_accuracy"] = t.robust("pgd", s["seed"] + 1, steps=s["strong_steps"], restarts=s["strong_restarts"])
    m["pgd_minus_strong"] = m["pgd_accuracy"] - m["strong_accuracy"]
    m["fgsm_minus_pgd"] = m["fgsm_accuracy"] - m["pgd_accuracy"]
    if s["suite"]:
        log(f"  suite {s['suite']}")
        m["suite_accuracy"] = t.suite(s["suite"], s["seed"])
        m["strong_minus_suite"] = m["strong_accuracy"] - m["suite_accuracy"]
    scale = (f"{s['model']} (paper: conv32-conv64-fc1024), PGD-{s['train_steps']} adversarial training for "
             f"{s['epochs']} epochs (paper: PGD-40, 100k steps), {len(t.y)} test points - scaled to CPU time")
    return m, {"dataset": t.ds.name, "note": t.note, "scale": scale, "figures": {}}


# -- choosing epsilon ---------------------------------------------------------------------------------------
EPSILON = {"dataset": "fashion-mnist", "fallback": "fashion-mnist", "per_class": 200, "n_test": 2000,
           "norms": ["linf", "l2"], "perceptibility_eps": [0.0, 0.05, 0.1, 0.2, 0.3], "seed": 0}


def epsilon_choice(s: dict[str, Any], out: Path, *, data_dir=None, log: Log | None = None, progress: bool = True,
                   device=None):
    from ..artifacts.analysis import distances_run, perceptibility_run

    ds, note = pick_dataset(s["dataset"], s["fallback"], data_dir)
    record = distances_run(ds, out / "distances", per_class=s["per_class"], norms=list(s["norms"]),
                           n_test=s["n_test"], seed=s["seed"], progress=progress, device=device)
    p = perceptibility_run(ds, out / "perceptibility", eps=[float(e) for e in s["perceptibility_eps"]], seed=s["seed"])
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
    "cohen2019": (COHEN, cohen2019),
    "gowal2018": (GOWAL, gowal2018),
}


def defaults(experiment: str) -> dict[str, Any]:
    if experiment not in PROTOCOLS:
        raise ConfigError(f"unknown experiment protocol {experiment!r}; known: {', '.join(PROTOCOLS)}")
    return dict(PROTOCOLS[experiment][0])
