"""Flags and output shared by every subcommand."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..data import TEST_DATASET_NAMES
from ..errors import AdvlabError
from ..io import dumps
from ..progress import write
from ..data.preprocessing import PREPROCESSINGS
from . import types as T


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show defaults: "(default: X)" after an option's help, unless the
    help already says its default in words, the default is None (not given: the help says what happens)
    or the option is an on/off flag (off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if action.default is None or action.nargs == 0 or "default" in help:
            return help
        return super()._get_help_string(action)


def add_subcommand(subparsers, name: str, help: str, example: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=f"{help}\n\nExample:\n  {example}",
                              formatter_class=Formatter)
    p.set_defaults(_parser=p)  # the innermost subcommand's parser, whose flags word the library's errors
    return p


# Library parameters whose flag has another name (the rest: --NAME with '_' -> '-').
PARAMETER_FLAGS = {"model_args": "model_arg", "dataset_args": "dataset_arg", "rule": "budget_rule", "n_test": "n",
                   "pads": "pad", "run_dir": "out", "model_run": "model", "gan_run": "gan",
                   "embedding_run": "embedding", "defense_kwargs": "defense_arg"}


def flags_of(parser: argparse.ArgumentParser | None) -> Callable[[str], str | None]:
    """name -> the flag of `parser` for the library parameter `name` (None where it has none)."""
    options = {}
    for action in parser._actions if parser is not None else ():
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            options.setdefault(action.dest, long[0])
    return lambda name: options.get(name) or options.get(PARAMETER_FLAGS.get(name, ""))


def add_common(parser: argparse.ArgumentParser, out_help: str = "output directory") -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout (progress goes to stderr)")
    parser.add_argument("--seed", type=T.non_negative_int, default=0, help="random seed")
    parser.add_argument("--out", type=T.output_dir, default=None, help=out_help)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=T.existing_dir, default=None,
                        help="folder with dataset files (searched first; then $ADVLAB_DATA, ~/.cache/advlab, "
                             "/usr/share/datasets)")


def log(message: str) -> None:
    """Human-readable progress: always stderr, so --json output stays clean."""
    write(message)


def file_size(n_bytes: int) -> str:
    """A file size for people, in decimal units: 512 B, 84 KB, 3.1 MB, 12 MB, 1.5 GB (one decimal below 10)."""
    units = ("B", "KB", "MB", "GB", "TB")
    value, i = float(n_bytes), 0
    while value >= 999.5 and i < len(units) - 1:  # what would print as 1000 goes up a unit
        value, i = value / 1000, i + 1
    if i == 0:
        return f"{int(n_bytes)} B"
    return f"{value:.1f} {units[i]}" if value < 9.95 else f"{value:.0f} {units[i]}"


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    if args.json:
        print(dumps(record))
    else:
        print(text)


def add_budget(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--eps", type=T.eps_text, help="comma-separated budgets in raw input units, e.g. 0.05,0.1 or 8/255")
    group.add_argument("--eps-per-class", type=T.existing_file, metavar="FILE",
                       help="JSON mapping class -> epsilon (from `advlab analyze distances`): one budget per class")


DEVICE_HELP = ("where the model runs: auto takes the GPU when there is one (under torchrun each rank takes "
               "cuda:LOCAL_RANK); data moves there batch by batch, results come back to the CPU")


def add_device(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    parser.add_argument("--device", type=T.device, default="auto", metavar="auto|cpu|cuda|cuda:N|mps", help=help)


def finish(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int], out_help: str, *,
           data_dir: bool = True, device: bool | str = True) -> None:
    """The flags every subcommand ends with (--json, --seed, --out, --no-progress; --data-dir and --device
    where they apply, `device` being the --device help when a string) and the function that runs it."""
    add_common(parser, out_help)
    if data_dir:
        add_data_dir(parser)
    if device:
        add_device(parser, device if isinstance(device, str) else DEVICE_HELP)
    parser.set_defaults(handler=handler)


def finish_subject(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int], step: str,
                   what: str = "results") -> None:
    """finish() for the commands that run on a --run or --model (add_subject): `what` goes to RUN/STEP."""
    add_common(parser, f"with --run: where the {what} go (default RUN/{step}); with --model: your model's run "
                       f"directory (default runs/FUNCTION-HASH), the {what} going to OUT/{step}")
    add_subject(parser)
    parser.set_defaults(handler=handler)


def add_resume(parser: argparse.ArgumentParser) -> None:
    """--resume and --overwrite, for the commands that train into --out."""
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last epoch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")


def add_points(parser: argparse.ArgumentParser, verb: str,
               batch_help: str = "points per batch (default: 500 on the CPU, 4096 on a GPU; halved if it does not "
                                 "fit)") -> None:
    """--n (the first N test points) and --batch-size."""
    parser.add_argument("--n", type=T.positive_int, default=None, help=f"{verb} the first N test points (default: all)")
    parser.add_argument("--batch-size", type=T.positive_int, default=None, help=batch_help)


def add_precision(parser: argparse.ArgumentParser) -> None:
    """--precision and --graphs: how the attacks search (advlab.precision, advlab.graphs; docs/gpu.md)."""
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="precision of the attacks' forward and backward passes (autocast; fp16 loss-scaled); "
                             "every break is verified in fp32 and every reported number is fp32 (default fp32)")
    parser.add_argument("--graphs", action="store_true",
                        help="run the attacks' steps through CUDA graphs (torch.compile reduce-overhead); falls back "
                             "to eager if capture fails; no effect without CUDA")


def add_subject(parser: argparse.ArgumentParser) -> None:
    """--run, or the user's own --model with its weights, plus the data it runs on and the device."""
    g = parser.add_argument_group("the model: a run directory (--run) or your own (--model)")
    g.add_argument("--run", type=T.existing_dir, default=None, help="run directory (from advlab train, or an earlier --model evaluation)")
    g.add_argument("--model", default=None, metavar="SPEC",
                   help="your own model: path/to/file.py:FUNCTION or package.module:FUNCTION returning an nn.Module "
                        "that maps the data's raw inputs to logits (runs your code), torchvision:NAME or timm:NAME "
                        "(the advlab[zoo] extra), robustbench:NAME (RobustBench's zoo, with --dataset and --norm "
                        "naming its leaderboard; the advlab[robustbench] extra), or an advlab model name; with "
                        "--model, --out is its run directory (default runs/FUNCTION-HASH)")
    g.add_argument("--weights", type=T.existing_file, default=None, metavar="FILE",
                   help="--model's weights: .safetensors, or a .pt/.pth state dict (read with weights_only=True)")
    g.add_argument("--model-dir", type=T.output_dir, default=None, metavar="DIR",
                   help="--model robustbench:NAME's checkpoints, in RobustBench's layout DIR/DATASET/THREAT/NAME.pt "
                        "(THREAT Linf or L2); a missing one is downloaded there through RobustBench when the network "
                        "allows (default: ~/.cache/advlab/robustbench)")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="keyword argument for --model, repeatable")
    g.add_argument("--mean", type=T.number_list, default=None, help="per-channel mean to normalise with inside the model, e.g. 0.4914,0.4822,0.4465")
    g.add_argument("--std", type=T.number_list, default=None, help="per-channel std, with --mean; epsilon stays in raw input units")
    d = parser.add_argument_group("the data (default: the run's dataset)")
    d.add_argument("--dataset", default=None, choices=TEST_DATASET_NAMES,
                   help="a named dataset (imagenet: --data-dir DIR with DIR/val/WNID/*.JPEG, read lazily)")
    d.add_argument("--dataset-arg", action="append", metavar="KEY=VALUE", help="option of a generated dataset")
    d.add_argument("--data", type=T.existing_path, default=None, metavar="FILE_OR_DIR",
                   help="your own test data: .npz or .safetensors with x and y, or a folder with one sub-folder of "
                        "images per class (docs/data.md)")
    d.add_argument("--classes", default=None, help="--data: number of classes or their names, e.g. 10 or cat,dog")
    d.add_argument("--labels", default=None, choices=["folder", "filename"],
                   help="--data image folder: folder (one sub-folder per class, matched to --classes by name, or by "
                        "number when the folders are numbered; the default) or filename (a flat folder of NAME_LABEL.png "
                        "files, as foolbox's samples)")
    d.add_argument("--bounds", default=None, help="--data: valid input range LO,HI, or none for unbounded features "
                                                  "(default: [0, 1] for images)")
    d.add_argument("--preprocess", type=T.preprocessing, default=None, metavar="|".join(PREPROCESSINGS),
                   help="--data image folder or --dataset imagenet: read the images lazily (memory does not grow with "
                        "their number), each through this RobustBench preprocessing, so sizes may differ; none keeps "
                        "the size (default for imagenet: res256crop224; for a folder: read into memory as they are)")
    d.add_argument("--workers", type=T.positive_int, default=None,
                   help="with --preprocess: processes that decode images (default: up to 8 of the CPUs)")
    add_data_dir(parser)
    add_device(parser)


def open_subject(args: argparse.Namespace, device=None):
    """The Subject the --run/--model/--data/--device flags describe (advlab.subject); `device`, when
    given, is --device already resolved (under torchrun: this rank's)."""
    from ..parsing import parse_key_values
    from ..subject import open_subject as _open

    classes, bounds = None, "auto"
    if args.data is not None:
        from ..data.files import parse_bounds, parse_classes
        classes = parse_classes(args.classes) if args.classes is not None else None
        if args.bounds is not None:
            bounds = parse_bounds(args.bounds)
    elif args.classes is not None or args.bounds is not None or args.labels is not None:
        raise AdvlabError("--classes, --bounds and --labels describe a --data file or folder; a named dataset knows "
                          "its own")
    return _open(run=args.run, model=args.model, weights=args.weights,
                 model_args=parse_key_values(args.model_arg, "--model-arg") if args.model_arg else None,
                 mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"), dataset=args.dataset,
                 dataset_args=parse_key_values(args.dataset_arg, "--dataset-arg") if args.dataset_arg else None,
                 data=args.data, classes=classes, bounds=bounds, labels=args.labels or "folder", preprocess=args.preprocess,
                 workers=args.workers, data_dir=args.data_dir,
                 device=device if device is not None else args.device,
                 run_dir=args.out if args.model is not None else None, norm=getattr(args, "norm", None),
                 model_dir=args.model_dir)


def _floats(text: str | None, flag: str) -> list[float] | None:
    from ..parsing import parse_number
    if text is None:
        return None
    values = [parse_number(t, flag) for t in text.split(",") if t.strip()]
    if not values:
        raise AdvlabError(f"{flag} needs one number per channel, e.g. {flag} 0.5 or {flag} 0.49,0.48,0.45")
    return values
