"""Finding and reading the records a run directory holds, for the report.

The report looks for the files the other commands wrote, by the names in advlab.rundir: `walk`
finds every file of one name under the root (at most MAX_DEPTH levels down, skipping checkpoints and
partial results), `read` reads a record or gives None for one the report cannot use; `attacks`, `evals`
and `certifications` return the records of one trained run, and `records` those of one kind of analysis
anywhere under the root, with the figures they come with inlined as data URIs. Nothing here decides how
a record is shown; that is entries.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import rundir
from ..io import read_record
from .. import plotting as F

SKIP_DIRS = {rundir.CHECKPOINT_DIR, rundir.PARTS_DIR, "__pycache__"}
MAX_DEPTH = 4


# -- walking and reading --------------------------------------------------------------------------
def walk(root: Path, name: str, depth: int = MAX_DEPTH) -> list[Path]:
    """Files called `name` under root, at most `depth` levels down, in a stable order."""
    found: list[Path] = []

    def visit(d: Path, level: int) -> None:
        if (d / name).is_file():
            found.append(d / name)
        if level >= depth:
            return
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                              and not p.name.startswith("."))
        except OSError:
            return
        for c in children:
            visit(c, level + 1)

    visit(root, 0)
    return found


read = read_record  # a JSON object, or None: a file the report cannot use is left out


def rel(root: Path, path: Path) -> str:
    r = os.path.relpath(path, root)
    return "." if r == "." else r


# -- one trained run ------------------------------------------------------------------------------
def run_name(root: Path, run_dir: Path, card: dict[str, Any]) -> str:
    if run_dir == root:
        defense = defense_name(card)
        return f"{card['model']['name']}" + ("" if defense == "none" else f" ({defense})")
    return rel(root, run_dir)


def is_external(card: dict[str, Any]) -> bool:
    """A model the user pointed at (`--model SPEC --weights W`), not one advlab trained."""
    return card.get("kind") == "external" or bool(card.get("model", {}).get("external"))


def defense_name(card: dict[str, Any]) -> str:
    """The card's defense; "external" for a user's model whose training advlab does not know."""
    name = (card.get("defense") or {}).get("name") or "none"
    return "external" if is_external(card) and name == "unknown" else name


def attacks(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / rundir.ATTACKS_DIR).glob(f"*/{rundir.RESULT_FILE}")):
        rec = read(path)
        if rec and rec.get("results"):
            grids = []
            for r in rec["results"]:
                png = path.parent / rundir.grid_png(r["eps"])
                if png.is_file():
                    grids.append({"eps": r["eps"], "src": F.data_uri(png.read_bytes())})
            out.append({"dir": path.parent, "record": rec, "grids": grids})
    return out


def evals(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / rundir.EVAL_DIR).glob(f"*/{rundir.RESULT_FILE}")):
        rec = read(path)
        if rec and rec.get("results"):
            out.append({"dir": path.parent, "record": rec})
    return out


def certifications(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((run_dir / rundir.CERTIFY_DIR).glob(f"*/{rundir.RESULT_FILE}")):
        rec = read(path)
        if rec and rec.get("certified_accuracy") and rec.get("method"):
            out.append({"dir": path.parent, "record": rec})
    return out


# -- analyses found anywhere under the root -------------------------------------------------------
def records(root: Path, name: str, needs: str | None = None) -> list[dict[str, Any]]:
    """Every record called `name` (a file name from advlab.rundir) under root that holds the key
    `needs`, with the figures it lists inlined."""
    out = []
    for path in walk(root, name):
        rec = read(path)
        if not rec or (needs is not None and needs not in rec):
            continue
        files = {label: _figure_file(path.parent, v) for label, v in (rec.get("figures") or {}).items()}
        figs = [{"label": label, "src": F.data_uri(f.read_bytes())} for label, f in files.items() if f.is_file()]
        out.append({"where": rel(root, path.parent), "record": rec, "figures": figs})
    return out


def _figure_file(folder: Path, listed: str) -> Path:
    """A figure a record lists: relative to its folder (reproduce.json), or a path as the analysis wrote it,
    found by its name in the record's folder (the folder may have moved since)."""
    inside = folder / listed
    return inside if inside.is_file() else folder / Path(listed).name
