"""Safe files: the package never unpickles user files and never loads weights through pickle."""

import ast
from pathlib import Path

import advlab

PACKAGE = Path(advlab.__file__).parent
FORBIDDEN = {"pickle.load", "pickle.loads", "eval", "exec", "np.load", "numpy.load"}


def unsafe_calls(source: str) -> list[int]:
    """Line numbers of torch.load without weights_only=True and of calls that unpickle or eval."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name == "torch.load":
            kw = {k.arg: k.value for k in node.keywords}
            safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            if not safe:
                lines.append(node.lineno)
        elif name in FORBIDDEN:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_package_has_no_unsafe_loading():
    offending = {str(p.relative_to(PACKAGE)): unsafe_calls(p.read_text()) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in offending.items() if v}


def test_the_audit_finds_each_unsafe_call():
    code = ("import torch, pickle\n"
            "torch.load('w.pt')\n"
            "pickle.loads(b'')\n"
            "torch.load('w.pt', weights_only=True)\n"
            "torch.load('w.pt', weights_only=False)\n"
            "eval('1')\n")
    assert unsafe_calls(code) == [2, 3, 5, 6]
