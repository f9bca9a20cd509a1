"""train, eval (PyTorch and onnxruntime), inspect --png and demo from the command line."""
import json

import pytest
from click.testing import CliRunner

from mcgraph.cli import main


def _run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train") / "run"
    code, out = _run("train", "resnet20", "--data", "synthetic", "--epochs", "2", "--batch-size",
                     "64", "--fan-in", "2", "--out", d, "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["epochs_done"] == 2 and res["steps"] == 16 and res["stopped"] == "done"
    return d


def test_train_writes_metrics_per_epoch(run_dir):
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert 0 <= rows[-1]["test_acc"] <= 100 and rows[-1]["images_per_s"] > 0


def test_eval_checkpoint_and_onnx_agree(run_dir, tmp_path):
    code, out = _run("eval", run_dir / "best.pt", "--data", "synthetic", "--json")
    assert code == 0, out
    pt = json.loads(out)
    code, out = _run("compile", run_dir / "best.pt", "-o", tmp_path / "m.onnx", "--json")
    assert code == 0, out
    code, out = _run("eval", tmp_path / "m.onnx", "--data", "synthetic", "--json")
    assert code == 0, out
    ort = json.loads(out)
    assert ort["runtime"] == "onnxruntime" and pt["runtime"] == "pytorch"
    assert abs(ort["acc"] - pt["acc"]) < 0.5 and ort["images"] == 256


def test_inspect_png(run_dir, tmp_path):
    code, out = _run("inspect", run_dir / "best.pt", "--png", tmp_path / "c.png")
    assert code == 0, out
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_from_last(run_dir):
    code, out = _run("train", "resnet20", "--data", "synthetic", "--out", run_dir, "--resume",
                     "--json")
    assert code == 0, out
    assert json.loads(out)["epochs_done"] == 2       # already finished: nothing more to do


def test_demo_end_to_end_on_synthetic(tmp_path):
    code, out = _run("demo", "--data", "synthetic", "--epochs", "1", "--out", tmp_path / "d", "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["test_acc_onnxruntime"] == pytest.approx(res["test_acc_pytorch"], abs=0.5)
    assert res["params_after"] <= res["params_before"]
    assert res["modules_after"] == res["modules_before"] - len(res["removed"])
    assert (tmp_path / "d" / "model.onnx").is_file() and (tmp_path / "d" / "connectivity.png").is_file()


@pytest.mark.parametrize("args,reason", [
    (["train", "resnet20", "--data", "cifar10", "--out", "r"], "needs --data-dir"),
    (["train", "resnet20", "--data", "fashion-mnist", "--data-dir", "nowhere", "--out", "r"],
     "nowhere"),
    (["train", "resnet20", "--data", "mnist2", "--out", "r"], "mnist2"),
    (["train", "resnet21", "--data", "synthetic", "--out", "r"], "unknown model"),
    (["train", "resnet20", "--data", "synthetic", "--device", "cuda", "--out", "r"], "CUDA"),
    (["eval", "nothere.onnx", "--data", "synthetic"], "does not exist"),
])
def test_bad_training_input(tmp_path, monkeypatch, args, reason):
    import torch
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    monkeypatch.chdir(tmp_path)
    code, out = _run(*args)
    assert code != 0 and "Traceback" not in out
    assert reason in out.strip().splitlines()[-1], out
