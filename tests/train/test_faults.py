"""Fault injection: SIGKILL at several moments (one during a checkpoint write), SIGTERM, a full
disk and an output directory that cannot be created or written.

``mcgraph train`` runs in a subprocess with one thread; ``MCGRAPH_TEST_SLOW_WRITE=SECONDS[:NAME]``
makes every atomic write (of files named NAME) wait between its complete temp file and the rename,
so a kill lands inside that window for sure. After each kill the previous ``last.pt`` loads, no
temp file is taken for it, and ``--resume`` ends where an uninterrupted run ends.
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, metrics_rows, run_cli, run_cli_ok

import mcgraph
from mcgraph.checkpoint import read_checkpoint

# 256 images, batch 32: 8 steps per epoch, 16 in all; last.pt every 2 steps and at epoch ends
ARGS = ("train", "resnet20", "--data", "synthetic", "--epochs", "2", "--batch-size", "32",
        "--val-size", "0", "--max-train-samples", "256", "--freeze-at", "0.25",
        "--save-every", "2", "--no-progress", "--json")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("MCGRAPH_TEST_SLOW_WRITE", None)


def _start(out, *extra, slow=None):
    env = {**ENV, **({"MCGRAPH_TEST_SLOW_WRITE": slow} if slow else {})}
    return subprocess.Popen([sys.executable, "-m", "mcgraph", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _wait(cond, p, timeout=60.0, what=""):
    t0 = time.monotonic()
    while not cond():
        if p.poll() is not None:
            raise AssertionError(f"the run ended (rc {p.returncode}) before {what}: "
                                 f"{p.stderr.read()[-2000:]}")
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.005)


def _kill(p):
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL


def _temps(d, name="*"):
    return sorted(x.name for x in Path(d).glob(f".{name}.*.tmp"))


def _step(path):
    try:
        return torch.load(path, weights_only=True)["train"]["step"]
    except Exception:            # not there, or still being written
        return None


def _last_loads(d):
    """last.pt reads as a checkpoint and as a model; its training step."""
    ckpt = read_checkpoint(Path(d) / "last.pt")
    mcgraph.load(Path(d) / "last.pt")
    return ckpt["train"]["step"]


def _max_diff(a, b):
    sa, sb = (torch.load(Path(x), weights_only=True)["state_dict"] for x in (a, b))
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0
               for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults") / "ref"
    rc, out, err = _finish(_start(d))
    assert rc == 0, err
    assert (json.loads(out)["steps"], json.loads(out)["stopped"]) == (16, "done")
    return d


def test_sigkill_at_several_moments_then_resume_ends_where_an_uninterrupted_run_ends(
        reference, tmp_path):
    d, REPORT = tmp_path / "run", []          # what each kill showed, printed (pytest -s)
    # 1. before any checkpoint: the first last.pt write is held open; kill inside it
    p = _start(d, slow="30:last.pt")
    _wait(lambda: _temps(d, "last.pt"), p, what="the first last.pt write")
    _kill(p)
    assert not (d / "last.pt").exists() and _temps(d, "last.pt")
    # the temp file beside it is never taken for last.pt
    rc, out, err = _finish(_start(d, "--resume"))
    assert rc == 2 and out == "" and err.count("\n") == 1 and "nothing to resume" in err, err
    REPORT.append("kill 1: during the first last.pt write (step 2): no last.pt; --resume "
                  "refused in one line; a fresh run follows")
    # 2. mid-epoch, during a last.pt write (its temp complete, not yet renamed); the killed
    # run left config.json and metrics.jsonl: starting over there needs --overwrite
    rc, out, err = _finish(_start(d))
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err, err
    p = _start(d, "--overwrite", slow="1.5:last.pt")
    _wait(lambda: (d / "last.pt").exists() and any(_step(d / t) for t in _temps(d, "last.pt")),
          p, what="the second last.pt write, complete and not yet renamed")
    _kill(p)
    [tmp] = _temps(d, "last.pt")
    held, pending = _last_loads(d), _step(d / tmp)
    assert (held, pending) == (2, 4), (held, pending)      # the killed write would have held step 4
    REPORT.append(f"kill 2: during a mid-epoch last.pt write of step {pending}: last.pt loads, "
                  f"holds step {held}")
    # 3. at the first epoch's end, while best.pt is written: its metrics row is already logged
    p = _start(d, "--resume", slow="30:best.pt")
    _wait(lambda: _temps(d, "best.pt"), p, what="the best.pt write")
    _kill(p)
    held = _last_loads(d)
    assert held == 6 and len(metrics_rows(d)) == 1
    REPORT.append(f"kill 3: while best.pt of epoch 1 was written (metrics row logged): last.pt "
                  f"loads, holds step {held}")
    # 4. at a random moment once the resumed run has saved (every write slowed to 0.3 s)
    delay = random.Random(12).uniform(0.0, 1.5)
    p = _start(d, "--resume", slow="0.3")
    _wait(lambda: (_step(d / "last.pt") or 0) > 6, p, what="a save after the resume")
    time.sleep(delay)
    if p.poll() is None:
        _kill(p)
        held = _last_loads(d)
        REPORT.append(f"kill 4: {delay:.2f} s after the resumed run's first save "
                      f"(temp files: {_temps(d) or 'none'}): last.pt loads, holds step {held}")
    else:
        _finish(p)
    # 5. resume to the end: the uninterrupted run's weights, metrics rows, and no temp left
    rc, out, err = _finish(_start(d, "--resume"))
    assert rc == 0, err
    res = json.loads(out)
    assert (res["steps"], res["epochs_done"], res["stopped"]) == (16, 2, "done")
    diff = _max_diff(d / "last.pt", reference / "last.pt")
    assert diff <= 1e-6, diff
    assert _max_diff(d / "best.pt", reference / "best.pt") <= 1e-6
    assert metrics_rows(d) == metrics_rows(reference)
    assert _temps(d) == []
    REPORT.append(f"after {sum(r.startswith('kill') for r in REPORT)} kills: max |weight "
                  f"difference| to the uninterrupted run {diff:g}")
    print("\n".join(REPORT))


def test_sigterm_saves_exits_130_and_resumes_to_the_same_weights(reference, tmp_path):
    d = tmp_path / "run"
    p = _start(d, slow="0.5:last.pt")
    _wait(lambda: (d / "last.pt").exists(), p, what="the first last.pt")
    p.send_signal(signal.SIGTERM)
    rc, out, err = _finish(p)
    assert rc == 130 and out == "", (rc, err)
    [line] = err.splitlines()
    assert line.startswith("error: train: interrupted by SIGTERM") and "--resume" in line, line
    stopped = _last_loads(d)
    assert 2 < stopped < 16
    rc, out, err = _finish(_start(d, "--resume"))
    assert rc == 0, err
    diff = _max_diff(d / "last.pt", reference / "last.pt")
    assert diff <= 1e-6
    print(f"SIGTERM: exit 130, last.pt at step {stopped}; resumed: max diff {diff:g}")


# ------------------------------------------------------------------ disks that refuse
SMALL = ARGS[:-1]      # in-process, without --json


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_the_previous_checkpoint(tmp_path,
                                                                               monkeypatch):
    """ENOSPC in the fifth checkpoint write (last.pt at epoch 1's end) after 100 kB of it."""
    import builtins

    import mcgraph.checkpoint as ck
    writes = []

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            if self.n > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.n += len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def fake_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        if "w" in mode and str(path).endswith(".tmp"):
            writes.append(path)
            if len(writes) == 5:
                return Full(f)
        return f
    monkeypatch.setattr(ck, "open", fake_open, raising=False)
    d = tmp_path / "run"
    r = run_cli(*SMALL, "--out", d)
    line = assert_one_line_error(r, "cannot write", "last.pt", "No space left on device")
    assert len(writes) == 5                          # steps 2, 4, 6; best.pt of epoch 1; last.pt
    assert _last_loads(d) == 6 and _temps(d) == []
    monkeypatch.undo()
    run_cli_ok(*SMALL, "--out", d, "--resume")
    assert _last_loads(d) == 16 and len(metrics_rows(d)) == 2
    print(f"ENOSPC (injected): {line!r}; last.pt kept at step 6; resume finished")


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the injected ENOSPC test "
                    "stands in for it")


def test_a_really_full_filesystem_and_a_read_only_one(tmp_path):
    """A 5.5 MB tmpfs holds last.pt and best.pt (2.2 MB each) but not a third copy."""
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "5500k")
    try:
        d = mnt / "run"
        r = run_cli(*SMALL, "--out", d)
        line = assert_one_line_error(r, "cannot write", "No space left on device")
        held = _last_loads(d)
        assert held == 6 and _temps(d) == []
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = (d / "last.pt").read_bytes()
        r = run_cli(*SMALL, "--out", d, "--resume")
        line_ro = assert_one_line_error(r, "cannot write", "Read-only file system")
        assert (d / "last.pt").read_bytes() == before
        print(f"real full tmpfs: {line!r}, last.pt kept at step {held}; read-only: {line_ro!r}")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_an_output_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    r = run_cli(*SMALL, "--out", tmp_path / "a_file" / "run")
    line = assert_one_line_error(r, "--out", "a_file/run", "cannot create the directory",
                           "Not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    print(f"output under a file: {line!r}")
