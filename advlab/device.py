"""Which device a command runs on: `--device auto|cpu|cuda|cuda:N|mps`.

`auto` (the default everywhere) is CUDA when torch sees a GPU, else the CPU. Under torchrun with
CUDA each rank takes its own GPU, cuda:LOCAL_RANK, whatever `auto` or `cuda` would pick; an
explicit `cuda:N` is respected. Asking for a device that is not there is an AdvlabError (exit 2),
never a silent fall-back to the CPU: a user who asked for the GPU must not get CPU numbers slowly.

Data stays on the CPU and moves to the device batch by batch; results come back to the CPU.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import AdvlabError

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for a --device value (None or "auto": CUDA when available, else the CPU)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    local_rank = _torchrun_local_rank()
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise AdvlabError("`device='mps'`: Apple's Metal backend is not available on this machine; "
                              "use `device='cpu'` or `device='auto'`")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise AdvlabError(f"`device` must be one of {CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise AdvlabError(f"`device={text!r}`: CUDA is not available ({why}, torch {torch.__version__}); "
                          "use `device='cpu'`, or `device='auto'` to take the GPU when there is one")
    if match.group(1) is None:
        index = local_rank if local_rank is not None else torch.cuda.current_device()
    else:
        index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise AdvlabError(f"`device='cuda:{index}'`: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


CPU_BATCH = 500     # attacks on a CPU: large enough to use its vector units, small enough for its caches
GPU_BATCH = 4096    # on an accelerator: large batches keep it busy; out of memory halves it (advlab.oom)


def default_batch_size(device: torch.device | str) -> int:
    """The batch an attack or evaluation uses on `device` when the user sets none."""
    return CPU_BATCH if torch.device(device).type == "cpu" else GPU_BATCH


def describe(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H200)' or 'cpu': what results and reports record."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _torchrun_local_rank() -> int | None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None
