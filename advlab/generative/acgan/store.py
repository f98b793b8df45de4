"""AC-GAN files: the finished run directory (`model.safetensors` + `card.json`, `"kind": "acgan"`) and the
training checkpoint (both networks, both optimiser states, the history), all safetensors, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...errors import AdvlabError, CorruptFileError
from ...io import flatten_state, load_tensors, read_metadata, save_tensors, unflatten_state, write_json
from ...rundir import CARD_FILE, CHECKPOINT_FILE, MODEL_FILE
from ...runs import environment, read_card
from .model import ACGAN

KIND = "acgan"  # card["kind"] of a GAN run (classifier runs have none)


# -- run directories ----------------------------------------------------------------------------

def save_gan(run_dir: str | Path, gan: ACGAN, card: dict[str, Any]) -> Path:
    run_dir = Path(run_dir)
    card = {**card, "kind": KIND, "versions": environment()}
    save_tensors(run_dir / MODEL_FILE, gan.state_dict())
    write_json(run_dir / CARD_FILE, card)
    return run_dir


def load_gan(run_dir: str | Path, *, device=None) -> tuple[ACGAN, dict[str, Any]]:
    """(AC-GAN in eval mode, card) from a run directory written by `advlab generate train`.

    `device`: "auto", "cpu", "cuda", "cuda:N", a torch.device, or None (the CPU)."""
    card = read_card(run_dir)
    if card.get("kind") != KIND:
        raise AdvlabError(f"{run_dir} is not an AC-GAN run (it holds a {card.get('model', {}).get('name', '?')} "
                          "classifier); train a generator with `advlab generate train`")
    spec = card["model"]
    gan = ACGAN(spec["input_shape"], spec["num_classes"], spec["latent_dim"], spec["width"],
                tuple(spec["bounds"]) if spec.get("bounds") else None)
    state = load_tensors(Path(run_dir) / MODEL_FILE)
    try:
        gan.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CorruptFileError(f"{run_dir}: weights do not match the AC-GAN in {CARD_FILE}: {e}") from e
    if device is not None:
        from ...device import resolve_device
        gan.to(resolve_device(device))
    return gan.eval(), card


# -- training checkpoints -----------------------------------------------------------------------

def write_checkpoint(run_dir: Path, gan: ACGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     epoch: int, history: list[dict[str, Any]], identity: dict[str, Any]) -> None:
    tensors = {f"gan.{k}": v for k, v in gan.state_dict().items()}
    og, og_skel = flatten_state(opt_g.state_dict(), "opt_g")
    od, od_skel = flatten_state(opt_d.state_dict(), "opt_d")
    tensors.update(og)
    tensors.update(od)
    meta = {"epoch": epoch, "history": history, "opt_g": og_skel, "opt_d": od_skel, "identity": identity}
    save_tensors(run_dir / CHECKPOINT_FILE, tensors, {"advlab": json.dumps(meta)})


def read_checkpoint(run_dir: Path | None, gan: ACGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    identity: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Restore the networks and optimisers from `run_dir`'s checkpoint; returns (epoch, history).

    Refuses a checkpoint started with other settings than `identity`, naming the ones that differ."""
    path = run_dir / CHECKPOINT_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        raise AdvlabError(f"nothing to resume: {path} does not exist; run without `resume=True` to start")
    try:
        meta = json.loads(read_metadata(path)["advlab"])
    except Exception as e:  # noqa: BLE001 - any failure here means the file is damaged
        raise CorruptFileError(f"{path} is not a valid AC-GAN checkpoint ({e}); delete it and start again") from e
    if json.loads(json.dumps(meta["identity"])) != json.loads(json.dumps(identity)):
        diff = sorted(k for k in set(meta["identity"]) | set(identity) if meta["identity"].get(k) != identity.get(k))
        raise AdvlabError(f"cannot resume {run_dir}: it was started with different settings "
                          f"({', '.join(diff)}); rerun with the original options, or use a new `out`")
    tensors = load_tensors(path)
    gan.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gan.")})
    opt_g.load_state_dict(unflatten_state(meta["opt_g"], tensors))
    opt_d.load_state_dict(unflatten_state(meta["opt_d"], tensors))
    return meta["epoch"], meta["history"]
