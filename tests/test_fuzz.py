"""Fuzzing the front doors: random command lines, TOML suite files and option strings either work
or fail cleanly (AdvlabError / exit code 2), never with a traceback."""

import contextlib
import io
import shutil
import tempfile
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advlab.cli import main
from advlab.config import parse_eps_list, parse_key_values
from advlab.errors import AdvlabError
from advlab.evaluate import load_suite_file

JUNK = st.sampled_from(["", "x", "-1", "0", "nan", "inf", "1e400", "8/0", "1/2", "[1,2]", "true", "=", "a=b=c",
                        "--json", "\u00e9\u00e8", "0.1,0.2", "-0.5"])


def one_of_or_junk(values):
    return st.one_of(st.sampled_from(values), JUNK)


@st.composite
def train_args(draw):
    args = ["train", "--dataset", draw(one_of_or_junk(["digits", "blobs", "gaussian"])),
            "--model", draw(one_of_or_junk(["softmax", "mlp", "logistic", "cnn-small"])),
            "--epochs", draw(one_of_or_junk(["1"])), "--batch-size", draw(one_of_or_junk(["256", "64"]))]
    if draw(st.booleans()):
        args += ["--lr", draw(one_of_or_junk(["0.01", "0.001"]))]
    if draw(st.booleans()):
        args += ["--model-arg", draw(one_of_or_junk(["hidden=16", "dropout=0.5", "width=1", "hidden=[8,8]"]))]
    if draw(st.booleans()):
        args += ["--defense", draw(one_of_or_junk(["pgd", "fgsm-rs", "noise-sign", "none"])),
                 "--eps", draw(one_of_or_junk(["0.1", "8/255"]))]
    if draw(st.booleans()):
        args += ["--dataset-arg", draw(one_of_or_junk(["n=50", "dim=3", "sigma=0"]))]
    return args


@st.composite
def attack_args(draw):
    sub = draw(st.sampled_from(["attack", "evaluate"]))
    args = [sub, "--eps", draw(one_of_or_junk(["0.1", "0,0.05", "8/255"])), "--n", draw(one_of_or_junk(["4", "9"]))]
    if sub == "attack":
        args += ["--attack", draw(one_of_or_junk(["fgsm", "pgd", "deepfool", "square", "apgd-ce", "highconf"]))]
        if draw(st.booleans()):
            args += ["--steps", draw(one_of_or_junk(["2", "3"]))]
        if draw(st.booleans()):
            args += ["--norm", draw(one_of_or_junk(["linf", "l2", "l1"]))]
        if draw(st.booleans()):
            args += ["--attack-arg", draw(one_of_or_junk(["n_queries=5", "steps=2", "kappa=0.5", "loss=dlr"]))]
    else:
        args += ["--suite", draw(one_of_or_junk(["fast", "custom"])), "--no-checks",
                 "--norm", draw(one_of_or_junk(["linf", "l2"]))]
    return args


def run(argv):
    """Exit code of the CLI; any exception but SystemExit(0/2) propagates and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    assert code in (0, 2), (argv, code, err.getvalue()[-2000:])
    if code == 2:
        assert "Traceback" not in err.getvalue()
        assert err.getvalue().strip(), "exit code 2 needs a reason on stderr"
    return code


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert run(["train", "--dataset", "digits", "--model", "softmax", "--epochs", "1", "--out", str(out),
                "--no-progress"]) == 0
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train_args())
def test_random_train_command_lines(argv):
    out = tempfile.mkdtemp()
    try:
        run(argv + ["--out", out + "/run", "--no-progress"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(attack_args())
def test_random_attack_and_evaluate_command_lines(small_run, argv):
    out = tempfile.mkdtemp()
    try:
        run(argv + ["--run", str(small_run), "--out", out, "--no-progress"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


KEYS = st.sampled_from(["name", "label", "steps", "restarts", "loss", "n_queries", "kappa", "norm", "seed",
                        "colour", "step_size", "rel_step_size"])
VALUES = st.one_of(st.integers(-3, 200).map(str), st.floats(-1, 10, allow_nan=False).map(repr),
                   st.sampled_from(['"pgd"', '"fgsm"', '"square"', '"apgd-ce"', '"nope"', '"ce"', '"dlr"', "true",
                                    "[1, 2]", '"8/255"', "{a = 1}"]))


@st.composite
def toml_docs(draw):
    lines = []
    if draw(st.booleans()):
        lines.append(f"{draw(KEYS)} = {draw(VALUES)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[attack]]")
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"{draw(KEYS)} = {draw(VALUES)}")
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["[attack", "= 3", "x = ", "[[attack]]\nname = pgd"])))
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(toml_docs())
def test_random_suite_files(text):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    try:
        suite = load_suite_file(f.name)
    except AdvlabError:
        return
    assert suite and all(entry.build("linf") is not None for entry in suite)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_option_strings(text):
    for parse in (parse_eps_list, lambda t: parse_key_values([t], "--model-arg")):
        try:
            parse(text)
        except AdvlabError:
            pass
