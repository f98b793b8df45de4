"""Data-parallel training and sharded evaluation on 2 CPU processes (gloo on localhost)."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from advlab import distributed
from advlab.io import load_tensors


def test_shards_cover_every_item_once_and_differ_by_at_most_one():
    for n in [0, 1, 5, 64, 101]:
        for w in [1, 2, 3, 7]:
            parts = [distributed.shard_slice(n, r, w) for r in range(w)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


def test_stage_batches_deal_every_rank_the_same_points_however_few_are_left():
    # one process: full batches, then the rest (the layout evaluations always had)
    assert distributed.stage_batches(150, 40) == [slice(0, 40), slice(40, 80), slice(80, 120), slice(120, 150)]
    assert distributed.stage_batches(0, 40, 4) == []
    for n in [1, 7, 150, 4097, 10000]:
        for shares in [2, 3, 8]:
            for batch in [40, 500, 4096]:
                batches = distributed.stage_batches(n, batch, shares)
                assert [i for b in batches for i in range(n)[b]] == list(range(n))
                assert len(batches) % shares == 0 and max(b.stop - b.start for b in batches) <= batch
                per_rank = [sum(b.stop - b.start for b in batches[r::shares]) for r in range(shares)]
                assert max(per_rank) - min(per_rank) <= len(batches) // shares, (n, shares, batch, per_rank)
    # the case that idled GPUs: 10,000 points at batch 4096 on 8 ranks were 3 batches (5 ranks idle)
    per_rank = [sum(b.stop - b.start for b in distributed.stage_batches(10000, 4096, 8)[r::8]) for r in range(8)]
    assert per_rank == [1250] * 8


def test_single_process_helpers_are_identities():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    x = torch.arange(10.0)
    assert torch.equal(distributed.shard_evaluate(lambda t: t * 2, x), x * 2)
    assert distributed.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank, port, n, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x = torch.arange(n * 3, dtype=torch.float32).view(n, 3)
        got = distributed.shard_evaluate(lambda t: t.sum(1, keepdim=True) * (distributed.rank() + 1) ** 0, x)
        torch.save(got, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_shard_evaluate_gathers_uneven_shards_in_order(tmp_path):
    n = 7  # shards of 4 and 3 rows
    torch.multiprocessing.spawn(_gather_worker, args=(_free_port(), n, str(tmp_path / "out")), nprocs=2)
    expected = torch.arange(n * 3, dtype=torch.float32).view(n, 3).sum(1, keepdim=True)
    for r in range(2):
        assert torch.equal(torch.load(tmp_path / f"out.{r}"), expected)


@pytest.mark.parametrize("defense", [["--defense", "pgd", "--eps", "0.1", "--defense-arg", "steps=3",
                                      "--defense-arg", "random_start=false"]])
def test_two_processes_match_one(tmp_path, defense):
    args = ["train", "--dataset", "digits", "--model", "mlp", "--model-arg", "hidden=[64]", "--epochs", "2",
            "--batch-size", "100", *defense, "--json", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "-m", "advlab",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "advlab", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    import json
    r2, r1 = json.loads(two.stdout.strip().splitlines()[-1]), json.loads(one.stdout)
    assert abs(r2["test_accuracy"] - r1["test_accuracy"]) <= 1 / 359 + 1e-9
    a, b = load_tensors(tmp_path / "two" / "model.safetensors"), load_tensors(tmp_path / "one" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=0), (k, (a[k] - b[k]).abs().max())
    card = json.loads((tmp_path / "two" / "card.json").read_text())
    assert card["train"]["world_size"] == 2
    assert len(two.stdout.strip().splitlines()) == 1, "only rank 0 prints the record"


def test_two_process_evaluation_is_exactly_the_single_process_one(tmp_path):
    """torchrun cuts every attack's still-robust points into equal batches, an even number of them
    (--shares defaults to the 2 processes), deals them out and merges after each attack: the per-example
    results, logits and adversarial examples equal one process's with --shares 2, bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = subprocess.run([sys.executable, "-m", "advlab", "train", "--dataset", "digits", "--model", "mlp",
                            "--epochs", "3", "--out", str(tmp_path / "run"), "--no-progress"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    args = ["evaluate", "--run", str(tmp_path / "run"), "--eps", "0.03,0.1", "--suite", "fast", "--n", "150",
            "--batch-size", "40", "--no-checks", "--json", "--no-progress", "--device", "cpu"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "-m", "advlab", "--",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "advlab", *args, "--shares", "2", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    import json
    assert len(two.stdout.strip().splitlines()) == 1, "only rank 0 prints the record"
    r2, r1 = json.loads(two.stdout), json.loads(one.stdout)
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert "--shares 2" in r2["summary"]["command"]  # the reproducing command gives these numbers in one process
    assert r2["results"] == r1["results"]
    assert 0 < r1["results"][1]["robust_accuracy"] < r1["results"][0]["robust_accuracy"]  # a real attack
    assert r2["passes"] == r1["passes"]
    s2, s1 = load_tensors(tmp_path / "two" / "state.safetensors"), load_tensors(tmp_path / "one" / "state.safetensors")
    for key in ("broken_by", "found_at", "logits", "clean_logits"):
        assert torch.equal(s2[key], s1[key]), key
    # the adversarial examples, replayed from the saved parts, are the same too
    from advlab.evaluate.robust import _State
    states = []
    for name in ("one", "two"):
        st = _State(tmp_path / name / "state.safetensors", {})
        st.x_adv = torch.zeros(2, 150, 1, 8, 8)
        t = load_tensors(tmp_path / name / "state.safetensors")
        st.found_at, st.stage, st.batch = t["found_at"], 10**6, 0
        st._replay_parts()
        states.append(st.x_adv)
    assert torch.equal(states[0], states[1]) and states[0].abs().sum() > 0
