"""Fuzzing the front doors: random command lines, TOML suite files and option strings either work
or fail cleanly (AdvlabError / exit code 2), never with a traceback."""

import contextlib
import io
import math
import shutil
import tempfile
import warnings

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from advlab.attacks import build_attack
from advlab.cli import main
from advlab.parsing import parse_eps_list, parse_key_values
from advlab.errors import AdvlabError
from advlab.evaluate import load_suite_file

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

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

GOOD_KEYS = st.sampled_from(["label", "steps", "n_queries", "loss"])  # options of some of the attacks
GOOD_VALUES = st.sampled_from(["1", "5", "20", '"ce"', '"p"'])


@st.composite
def toml_docs(draw):
    lines = []
    if draw(st.integers(0, 3)) == 3:  # (hypothesis draws 0 often: the rare branch is 3)
        lines.append(f"{draw(KEYS)} = {draw(VALUES)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[attack]]")
        if draw(st.integers(0, 3)) < 3:  # mostly a real attack's name, so that some files are good ones
            lines.append(f'name = "{draw(st.sampled_from(["pgd", "fgsm", "square", "apgd-ce"]))}"')
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f"{draw(GOOD_KEYS | KEYS)} = {draw(GOOD_VALUES | VALUES)}")
    if draw(st.integers(0, 3)) == 3:
        lines.append(draw(st.sampled_from(["[attack", "= 3", "x = ", "[[attack]]\nname = pgd"])))
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(toml_docs())
@example('[[attack]]\nname = "pgd"\nsteps = 5\nlabel = "p"\n[[attack]]\nname = "square"\nn_queries = 20\n')
@example('[[attack]]\nname = "pgd"\nn_queries = 5\n')
def test_random_suite_files(text):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    # The reference: the file's [[attack]] tables as TOML reads them, each built by build_attack.
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        doc = None
    tables = doc.get("attack") if doc is not None and set(doc) == {"attack"} else None
    expected = None
    if isinstance(tables, list) and tables and all(isinstance(t.get("name"), str) and not {"norm", "seed"} & set(t)
                                                   for t in tables):
        expected = []
        for t in tables:
            options = {k: v for k, v in t.items() if k not in ("name", "label")}
            try:
                expected.append((str(t.get("label", t["name"])), t["name"], options,
                                 repr(build_attack(t["name"], norm="linf", seed=0, **options))))
            except (AdvlabError, TypeError, ValueError):
                expected = None
                break
    try:
        suite = load_suite_file(f.name)
    except AdvlabError:
        assert expected is None, ("a good suite file was refused", text)
        event("refused")
        return
    event("accepted")
    assert expected is not None, ("a bad suite file was accepted", text)
    assert [(e.label, e.attack, e.options, repr(e.build("linf"))) for e in suite] == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
@example("8/255,,0.1")
@example("-0.5")
@example("nan")
@example("hidden=32,16")
@example("=3")
def test_option_strings(text):
    try:
        eps = parse_eps_list(text)
    except AdvlabError:
        pass
    else:  # one budget per non-empty item, each a finite number >= 0
        assert len(eps) == len([t for t in text.split(",") if t.strip()]) >= 1
        assert all(isinstance(e, float) and math.isfinite(e) and e >= 0 for e in eps), eps
    try:
        options = parse_key_values([text], "--model-arg")
    except AdvlabError:
        assert "=" not in text or not text.partition("=")[0], text
    else:  # KEY=VALUE: one option, named by what is left of the first '='
        key = text.partition("=")[0]
        assert "=" in text and key and list(options) == [key.strip().replace("-", "_")], (text, options)
