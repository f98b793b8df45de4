"""Run every benchmark in turn (make bench). Peer libraries live in benchmarks/.env-peers.

    python benchmarks/run_all.py            creates benchmarks/.env-peers on first use
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = HERE / ".env-peers"
PY = ENV / "bin" / "python"


def ensure_env() -> None:
    if PY.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    pip = [str(PY), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["-e", str(ROOT)], check=True)
    # torchattacks and pyautoattack pull torchvision or pins we do not want: install without deps.
    subprocess.run(pip + ["--no-deps", "torchattacks", "pyautoattack"], check=True)
    subprocess.run(pip + ["foolbox", "adversarial-robustness-toolbox", "requests"], check=True)


def main() -> None:
    ensure_env()
    # gpu.py runs only where CUDA is (without a GPU it says so and exits 0; --small is its CPU smoke run).
    for script in ["attack_speed.py", "evaluate_vs_autoattack.py", "memory.py", "training.py", "certify.py", "gpu.py"]:
        print(f"== {script}", flush=True)
        subprocess.run([str(PY), str(HERE / script)], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
