"""`--device` on every subcommand that runs a model (issue 17), and `device=` on the Python entry points.

The CLI checks walk `advlab.cli.build_parser()`, nested `analyze` and `generate` actions included,
so a new subcommand is covered (or must be listed in NO_MODEL with its reason) automatically.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from advlab.analysis import distances
from advlab.cli import build_parser, main
from advlab.data import Dataset, load_dataset
from advlab.errors import AdvlabError

# Subcommands that run no model and do no heavy tensor work, so they have no --device.
NO_MODEL = {
    ("report",): "reads a run directory's JSON, PNG and safetensors files and writes one HTML page",
    ("export", "robustbench"): "reads an evaluation's record and saved examples and writes them in RobustBench's "
                               "format; no model runs",
}
# Values that pass a subcommand's own argument checks (these may run before the device is resolved),
# and arguments that are required without argparse knowing it (--run or --model).
VALID = {"--eps": "0.1"}
EXTRA = {("attack",): ["--run", "{dir}"], ("evaluate",): ["--run", "{dir}"]}

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of every runnable subcommand, e.g. (("analyze", "embedding"), parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


LEAVES = dict(leaves(build_parser()))
WITH_DEVICE = sorted(p for p in LEAVES if p not in NO_MODEL)


def device_action(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if "--device" in a.option_strings), None)


def minimal_argv(parser: argparse.ArgumentParser, fixtures) -> list[str]:
    """The required arguments with placeholder values (an empty folder or file in `fixtures` where the
    option must name an existing one, first choices, "1" for numbers)."""
    from advlab.cli import types as T

    def value(action) -> str:
        if action.option_strings and action.option_strings[0] in VALID:
            return VALID[action.option_strings[0]]
        if action.choices:
            return str(next(iter(action.choices)))
        if action.type in (T.existing_dir,):
            return str(fixtures)
        if action.type in (T.existing_file, T.existing_path):
            return str(fixtures / "file")
        return "1" if action.type in (int, float, T.positive_int, T.positive_float, T.non_negative_int,
                                      T.non_negative_float, T.eps_text) else "missing"

    argv = []
    for action in parser._actions:
        if action.dest in ("help", "device") or isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings:
            argv.append(value(action))
        elif action.required:
            argv += [action.option_strings[0], value(action)]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            action = group._group_actions[0]
            argv += [action.option_strings[0], value(action)]
    return argv


# -- the CLI --------------------------------------------------------------------------------------------
def test_the_walk_sees_the_nested_subcommands():
    assert {("analyze", "embedding"), ("analyze", "distances"), ("generate", "train"), ("generate", "attack"),
            ("reproduce",), ("train",)} <= set(LEAVES)
    assert all(path in LEAVES for path in NO_MODEL), "NO_MODEL names a subcommand that no longer exists"


@pytest.mark.parametrize("path", WITH_DEVICE, ids=" ".join)
def test_every_subcommand_that_runs_a_model_has_device(path):
    action = device_action(LEAVES[path])
    assert action is not None, f"`advlab {' '.join(path)}` has no --device (or add it to NO_MODEL with the reason)"
    assert action.default == "auto"


@pytest.mark.parametrize("path", sorted(NO_MODEL), ids=" ".join)
def test_the_exceptions_have_no_device(path):
    assert device_action(LEAVES[path]) is None, f"{path} takes --device now: remove it from NO_MODEL"


@pytest.mark.parametrize("path", WITH_DEVICE, ids=" ".join)
def test_device_cuda_without_cuda_exits_2_before_any_work(path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also meaningful on a GPU machine
    fixtures, cwd = tmp_path / "fixtures", tmp_path / "cwd"
    fixtures.mkdir()
    (fixtures / "file").write_text("")
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # relative placeholder paths land here: nothing may be written
    extra = [a.format(dir=fixtures) for a in EXTRA.get(path, [])]
    argv = [*path, *minimal_argv(LEAVES[path], fixtures), *extra, "--device", "cuda"]
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA" in err, (argv, err)
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in fixtures.iterdir()) == ["file"], \
        f"{argv} wrote files before checking the device"


def test_a_bad_device_name_is_a_clear_error(capsys):
    assert main(["analyze", "blobs", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "--device: must be one of" in err and err.count("\n") == 1


# -- distances: the torch tiles against the numpy ones ---------------------------------------------------
@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_device_tiles_match_the_numpy_tiles(norm, monkeypatch):
    """The device code path (torch tiles), run on the CPU, against the numpy path."""
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(90, 12, generator=g)
    labels = torch.randint(0, 4, (90,), generator=g)  # class 4 of 5 has no references
    queries = torch.cat([torch.rand(20, 12, generator=g), refs[:9], refs[3:5]])  # exact duplicates too
    self_index = torch.cat([torch.full((20,), -1), torch.arange(9), torch.full((2,), -1)])
    y_queries = torch.arange(len(queries)) % 5
    args = (queries, refs, labels, 5, norm)
    numpy = distances.min_distance_to_classes(*args, self_index=self_index, block=7)
    mean_numpy = distances.mean_class_distances(refs, labels, queries, y_queries, 5, norm, block=8)

    monkeypatch.setattr(distances, "resolve_tile_device", lambda device: torch.device("cpu"))
    ticks = []
    on_device = distances.min_distance_to_classes(*args, self_index=self_index, block=7, device="cpu",
                                                  tick=lambda: ticks.append(1))
    mean_device = distances.mean_class_distances(refs, labels, queries, y_queries, 5, norm, block=8, device="cpu")
    assert len(ticks) == distances.count_tasks(len(queries), 7)
    finite = np.isfinite(numpy[0])
    assert (np.isfinite(on_device[0]) == finite).all() and (~finite).any()
    np.testing.assert_allclose(on_device[0][finite], numpy[0][finite], rtol=1e-12, atol=1e-12)
    assert (on_device[1] == numpy[1]).all()  # the same neighbour, ties to the first one, -1 for no reference
    np.testing.assert_allclose(mean_device, mean_numpy, rtol=1e-12, equal_nan=True)


def test_mps_is_refused_for_float64_tiles(monkeypatch):
    import advlab.device
    monkeypatch.setattr(advlab.device, "resolve_device", lambda spec: torch.device("mps"))
    with pytest.raises(AdvlabError, match="float64"):
        distances.resolve_tile_device("mps")


def test_the_cpu_means_the_numpy_path():
    assert distances.resolve_tile_device(None) is None
    assert distances.resolve_tile_device("cpu") is None
    assert distances.resolve_tile_device(torch.device("cpu")) is None


def _small_images(n_train=120, n_test=30, k=3, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y_train, y_test = torch.arange(n_train) % k, torch.arange(n_test) % k
    x_train = (torch.rand(n_train, 1, 4, 4, generator=g) + y_train.view(-1, 1, 1, 1)) / k
    x_test = (torch.rand(n_test, 1, 4, 4, generator=g) + y_test.view(-1, 1, 1, 1)) / k
    return Dataset("tiny", x_train, y_train, x_test, y_test, tuple("abc"[:k]), (0.0, 1.0))


def test_analyze_distances_on_the_cpu_is_the_default_exactly(tmp_path):
    from advlab.analysis.epsilon import analyze_distances
    ds = _small_images()
    kwargs = dict(per_class=10, norms=["l2", "linf"], progress=False, block=16)
    default = analyze_distances(ds, **kwargs)
    explicit = analyze_distances(ds, device="cpu", out=tmp_path, **kwargs)
    assert explicit["device"] == default["device"] == "cpu"
    for norm in ("l2", "linf"):
        for key in ("class_distance", "suggested_eps", "eps_per_class", "closest_pair", "train_test_nn"):
            assert explicit["norms"][norm][key] == default["norms"][norm][key]
    assert (tmp_path / "distances.json").is_file()


# -- the other Python entry points with device="cpu" ----------------------------------------------------
def test_linear_analyses_take_device():
    from advlab.analysis.blobs import blobs_picture
    from advlab.analysis.linearity import run_linearity
    from advlab.analysis.theory import run_theory

    lin = dict(dims=[5, 20], n_train=200, n_test=200)
    assert run_linearity("gaussian", device="cpu", **lin)["rows"] == run_linearity("gaussian", **lin)["rows"]
    th = dict(dimension_kwargs=dict(dims=[2, 10], n_train=100, n_test=100),
              samples_kwargs=dict(samples=[5], dim=20, reps=1, n_test=100))
    a, b = run_theory(device="cpu", **th), run_theory(**th)
    assert a["dimension"] == b["dimension"] and a["samples"] == b["samples"]
    bl = dict(eps=[0.0, 0.3], dataset_kwargs={"n": 300})
    assert blobs_picture(device="cpu", **bl)["results"] == blobs_picture(**bl)["results"]


def test_analyze_embedding_takes_device(tmp_path):
    from advlab.metric import load_embedding
    from advlab.metric.analyze import analyze_embedding

    full = load_dataset("digits")  # the classifier trains on all of it (train_run loads it by name)
    ds = Dataset(full.name, full.x_train[:300], full.y_train[:300], full.x_test[:100], full.y_test[:100],
                 full.classes, full.bounds)
    record = analyze_embedding(ds, tmp_path, train={"epochs": 1, "dim": 4, "arch": "mlp"}, classifier_model="softmax",
                               classifier_epochs=1, per_class=5, n=12, steps=2, pixel_eps=[0.1],
                               embedding_eps=[0.2], targets=[0.5], progress=False, device="cpu")
    assert record["device"] == "cpu" and record["comparison"]["n"] == 12
    net, _ = load_embedding(tmp_path / "embedding", device="cpu")
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_generate_entry_points_take_device(tmp_path):
    from advlab.defenses.run import train_run
    from advlab.defenses.training import TrainConfig
    from advlab.generative import GANConfig, UnrestrictedAttack, check_legitimacy, load_gan, train_gan
    from advlab.runs import load_run

    cfg = GANConfig(epochs=1, batch_size=32, latent_dim=4, width=4, seed=1)
    record = train_gan("digits", tmp_path / "gan", cfg, subset=96, progress=False, grids=False, device="cpu")
    again = train_gan("digits", tmp_path / "gan2", cfg, subset=96, progress=False, grids=False)
    assert record["device"] == "cpu" and record["loss_d"] == again["loss_d"]  # device="cpu" is the default exactly
    gan, _ = load_gan(tmp_path / "gan", device="cpu")
    train_run("digits", "softmax", tmp_path / "clf", config=TrainConfig(epochs=1), progress=False,
              device=torch.device("cpu"))
    clf, _ = load_run(tmp_path / "clf", device="cpu")
    source = torch.tensor([0, 1, 2])
    result = UnrestrictedAttack(steps=3, seed=0)(gan, clf, source)
    assert result.x.device.type == "cpu" and result.x.shape == (3, 1, 8, 8)
    ds = load_dataset("digits")
    legit = check_legitimacy(result.x, source, result.pred, result.success, clf, ds.x_train, ds.y_train, 10,
                             device="cpu")
    default = check_legitimacy(result.x, source, result.pred, result.success, clf, ds.x_train, ds.y_train, 10)
    assert torch.equal(legit.dist_source, default.dist_source) and torch.equal(legit.passes, default.passes)


def test_reproduce_takes_device(tmp_path):
    from advlab.reproduce import reproduce

    record = reproduce("blobs", tmp_path, quick=True, progress=False, report=False, device="cpu")
    assert record["device"] == "cpu" and record["rows"]


# -- on a GPU --------------------------------------------------------------------------------------------
@needs_cuda
def test_analyze_embedding_and_generate_train_on_cuda(tmp_path):
    from advlab.generative import GANConfig, UnrestrictedAttack, check_legitimacy, load_gan, train_gan
    from advlab.metric import load_embedding
    from advlab.metric.analyze import analyze_embedding
    from advlab.runs import load_run

    ds = load_dataset("digits")
    record = analyze_embedding(ds, tmp_path / "emb", train={"epochs": 1, "dim": 4}, classifier_model="cnn-small",
                               classifier_epochs=1, per_class=5, n=16, steps=2, pixel_eps=[0.1],
                               embedding_eps=[0.2], targets=[0.5], progress=False, device="cuda")
    assert record["device"].startswith("cuda") and 0 <= record["quality"]["knn_accuracy"] <= 1
    net, _ = load_embedding(tmp_path / "emb" / "embedding", device="cuda")
    assert all(p.is_cuda for p in net.parameters())
    clf, _ = load_run(tmp_path / "emb" / "classifier", device="cuda")

    cfg = GANConfig(epochs=1, batch_size=32, latent_dim=4, width=4, seed=1)
    gan_record = train_gan("digits", tmp_path / "gan", cfg, subset=96, progress=False, device="cuda",
                           judge_run=tmp_path / "emb" / "classifier")
    assert gan_record["device"].startswith("cuda") and np.isfinite(gan_record["loss_d"])
    gan, _ = load_gan(tmp_path / "gan", device="cuda")
    assert all(p.is_cuda for p in gan.parameters())
    source = torch.tensor([0, 1, 2, 3])
    result = UnrestrictedAttack(steps=20, seed=0, noise=0.1)(gan, clf, source)
    assert result.x.device.type == "cpu" and result.x.shape == (4, 1, 8, 8)
    legit = check_legitimacy(result.x, source, result.pred, result.success, clf, ds.x_train, ds.y_train, 10)
    assert legit.dist_source.device.type == "cpu" and torch.isfinite(legit.dist_source).all()

    from advlab.metric.triplet import embed, knn_predict
    z_train, z_test = embed(net, ds.x_train), embed(net, ds.x_test[:50])
    assert z_train.device.type == "cpu"
    on_gpu = knn_predict(z_test.cuda(), z_train.cuda(), ds.y_train.cuda(), 10)
    assert on_gpu.device.type == "cpu"
    assert (on_gpu == knn_predict(z_test, z_train, ds.y_train, 10)).float().mean() >= 0.96  # rounding may flip a tie


@needs_cuda
@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_distance_tiles_on_cuda_match_the_cpu(norm):
    g = torch.Generator().manual_seed(0)
    refs, labels = torch.rand(500, 64, generator=g), torch.randint(0, 10, (500,), generator=g)
    queries = torch.rand(70, 64, generator=g)
    cpu = distances.min_distance_to_classes(queries, refs, labels, 10, norm, block=64)
    gpu = distances.min_distance_to_classes(queries, refs, labels, 10, norm, block=64, device="cuda")
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-10, atol=1e-10)
    assert (gpu[1] == cpu[1]).mean() > 0.99  # only exact float64 ties could pick another neighbour
    np.testing.assert_allclose(distances.mean_class_distances(refs, labels, refs, labels, 10, norm, same=True,
                                                              device="cuda"),
                               distances.mean_class_distances(refs, labels, refs, labels, 10, norm, same=True),
                               rtol=1e-10)
