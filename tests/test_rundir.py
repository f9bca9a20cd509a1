"""Run directories: one process at a time works in one (rundir.locked)."""
import subprocess
import sys
import time

import pytest
from helpers import assert_one_line_error, run_cli

from mcgraph import rundir
from mcgraph.errors import McGraphError

HOLD = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(float(sys.argv[2]))")


def _holder(d, seconds: float) -> subprocess.Popen:
    """Another process holding ``d``'s lock for ``seconds``."""
    d.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d / rundir.LOCK), str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_directory_held_by_another_process_is_refused(tmp_path):
    p = _holder(tmp_path / "run", 30)
    try:
        with pytest.raises(McGraphError, match="another process is working in"):
            with rundir.locked(tmp_path / "run"):
                pass
    finally:
        p.kill()
        p.wait()


def test_a_waiting_caller_is_told_and_gets_the_directory_when_freed(tmp_path):
    p = _holder(tmp_path / "run", 1.0)
    told, t = [], time.monotonic()
    with rundir.locked(tmp_path / "run", on_wait=lambda: told.append(1)):
        waited = time.monotonic() - t
    p.wait()
    assert told == [1] and waited > 0.3


def test_locking_is_reentrant_within_a_process_and_released_after(tmp_path):
    with rundir.locked(tmp_path / "run"):
        with rundir.locked(tmp_path / "run"):      # the runner holds it, the trainer too
            pass
    p = subprocess.run([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
                        "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
                        str(tmp_path / "run" / rundir.LOCK)])
    assert p.returncode == 0, "the lock outlived its holder"


def test_train_into_a_directory_another_process_works_in_is_refused(tmp_path):
    p = _holder(tmp_path / "run", 60)
    try:
        res = run_cli("train", "resnet20", "--data", "synthetic", "--epochs", "1",
                      "--max-train-samples", "64", "--out", str(tmp_path / "run"), "--no-progress")
        assert_one_line_error(res, "another process is working in", exit_code=None)
    finally:
        p.kill()
        p.wait()
    assert not (tmp_path / "run" / rundir.CONFIG).exists()
