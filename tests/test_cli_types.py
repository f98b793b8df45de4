"""A fuzz test generated from the parsers themselves: every option of every subcommand.

The walk finds each option that takes a value, so an option added tomorrow is covered the day it is
added: it must have a validated type (advlab.cli.types), a list of choices, or a reason below to be
free text. Each typed option is tried with junk; every value its type refuses must end the command
with exit code 2, one line on stderr naming the option, no traceback, and no file written.
"""

import argparse
import os

import pytest

from advlab.cli import build_parser, main
from advlab.cli.types import VALIDATED

JUNK = ["0", "-1", "nan", "inf", "1e308", "", "text", "/no/such/file.npz", "0.5", "1"]

# Options whose value is free text by design, and where it is checked instead.
FREE_TEXT = {
    "--model-arg": "KEY=VALUE, checked by the model's own signature (advlab.parsing.parse_key_values)",
    "--dataset-arg": "KEY=VALUE, checked by the dataset loader's signature",
    "--defense-arg": "KEY=VALUE, checked by the defense's options",
    "--attack-arg": "KEY=VALUE, checked by the attack's options",
    "--set": "KEY=VALUE overrides of an experiment file, checked against the file's settings",
    "--model": "a spec (FILE.py:FN, package.module:FN, torchvision:NAME) or a run: resolved when loading",
    "--classes": "class names or a count, checked by advlab.data.files.parse_classes",
    "--bounds": "LO,HI or none, checked by advlab.data.files.parse_bounds",
    "--arch": "an advlab model name, checked by the model registry",
    "--classifier-model": "an advlab model name, checked by the model registry",
    "--source": "class numbers or 'all', checked against the GAN's classes",
    "--target": "'untargeted', 'all' or a class number, checked against the GAN's classes",
    "--pairs": "SOURCE:TARGET class pairs, checked against the dataset's classes",
    "--experiments": "names of theory experiments, checked against the list",
    "--norms": "names of norms, checked against linf, l2, l1",
    "name": "an experiment name or a .toml path, resolved by advlab reproduce",
    "--method": "a choice",
}


def walk(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))
        elif action.nargs != 0 and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


OPTIONS = list(walk(build_parser()))


def _name(action):
    return action.option_strings[0] if action.option_strings else action.dest


def test_every_option_that_takes_a_value_is_validated_or_free_text_for_a_reason():
    untyped = [f"{' '.join(path)} {_name(a)}" for path, a in OPTIONS
               if a.type not in VALIDATED and not a.choices and _name(a) not in FREE_TEXT]
    assert not untyped, f"options without a validated type (advlab.cli.types) or a FREE_TEXT reason: {untyped}"
    assert len(OPTIONS) > 150  # the walk reaches the nested subcommands


def _refused(action):
    """The junk values this option's type (or list of choices) refuses."""
    out = []
    for value in JUNK:
        if action.type in VALIDATED:
            try:
                action.type(value)
            except argparse.ArgumentTypeError:
                out.append(value)
        elif action.choices and value not in action.choices:
            out.append(value)
    return out


CASES = [(path, a.option_strings[0], _refused(a)) for path, a in OPTIONS if a.option_strings and _refused(a)]


def test_the_walk_tries_hundreds_of_refusals():
    tried = sum(len(values) for _, _, values in CASES)
    print(f"tried {tried} refused values over {len(CASES)} options of {len({p for p, _, _ in CASES})} subcommands")
    assert tried > 1000


@pytest.mark.parametrize("path,option,values", CASES, ids=[f"{' '.join(p)} {o}" for p, o, _ in CASES])
def test_a_refused_value_is_one_line_exit_2_and_writes_nothing(path, option, values, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for value in values:
        try:
            code = main([*path, f"{option}={value}"])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2, (value, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (value, err)
        assert option in lines[0], (value, err)
        assert os.listdir(tmp_path) == [], (value, os.listdir(tmp_path))


def test_the_recorded_evaluate_command_names_only_flags_of_the_evaluate_parser():
    """artifacts/evaluate.py lists the settings a reproducing command records (it may not import cli/) and
    spells each --NAME-WITH-DASHES: each must be an option of `advlab evaluate` under that name."""
    from advlab.artifacts.evaluate import COMMAND_FLAGS, COMMAND_REPEATED
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["evaluate"]
    flags = {a.dest: a.option_strings for a in sub._actions}
    for key in (*COMMAND_FLAGS, *COMMAND_REPEATED):
        assert key in flags and f"--{key.replace('_', '-')}" in flags[key], key
