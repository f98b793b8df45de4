"""advlab.io's atomic writer: what it leaves on disk."""

import os
import stat

import pytest
import torch

from advlab.io import atomic_write, save_tensors, write_json


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    """A written file has the mode any new file gets (0666 less the umask), not mkstemp's 0600."""
    umask(mask)
    atomic_write(tmp_path / "a.bin", b"data")
    write_json(tmp_path / "sub" / "b.json", {"a": 1})
    save_tensors(tmp_path / "c.safetensors", {"t": torch.zeros(2)})
    for name in ("a.bin", "sub/b.json", "c.safetensors"):
        assert _mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.safetensors", "sub"]  # no temp files left


def test_a_rewrite_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    atomic_write(tmp_path / "a.txt", b"one")
    atomic_write(tmp_path / "a.txt", b"two")
    assert (tmp_path / "a.txt").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
