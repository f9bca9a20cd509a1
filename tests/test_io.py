"""One atomic-write helper: the target appears whole or not at all."""
import pytest

from mcgraph import McGraphError
from mcgraph.io import atomic_path, write_text_atomic


def test_success_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(McGraphError, match="save: output directory .*nope does not exist"):
        with atomic_path(tmp_path / "nope" / "x.pt", "save"):
            pass
