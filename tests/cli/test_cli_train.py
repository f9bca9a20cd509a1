"""train, eval (PyTorch and onnxruntime), inspect --png and demo from the command line."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (
    assert_one_line_error,
    assert_same_outputs,
    metrics_rows,
    model_convs,
    ort_logits,
    rand,
    resnet20_chosen,
    resnet20_dead_blocks,
    run_cli,
    run_cli_json,
    run_cli_ok,
)

import mcgraph

TRAIN = ("train", "resnet20", "--data", "synthetic", "--epochs", "2", "--batch-size", "64",
         "--fan-in", "2", "--val-size", "0", "--freeze-at", "0.5")
# all 512 synthetic images train (no validation split): 8 steps per epoch; masks freeze at step 8


def _ckpt(path):
    return torch.load(path, weights_only=True)


def _dead(model):
    """Blocks no chosen (top-K) input reads, from the checkpoint's mask values."""
    return resnet20_dead_blocks(resnet20_chosen(model))


def _is_png_picture(path):
    from PIL import Image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = np.asarray(Image.open(path).convert("L"))
    assert min(img.shape) >= 100 and img.std() > 1, "empty or blank picture"
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("train") / "run"
    res = run_cli_json(*TRAIN, "--out", d)
    assert res["epochs_done"] == 2 and res["steps"] == 16 and res["stopped"] == "done"
    assert res["best"] == f"{d}/best.pt" and res["last"] == f"{d}/last.pt"
    return SimpleNamespace(dir=d, res=res)


def test_train_writes_metrics_per_epoch(run):
    rows = metrics_rows(run.dir, drop=())
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [8, 16]
    assert [r["masks_frozen"] for r in rows] == [False, True]       # --freeze-at 0.5 of 16 steps
    assert rows[1]["chosen_changed"] == 0                          # frozen masks do not move
    assert rows[-1]["test_acc"] == run.res["last_test_acc"]
    assert max(r["test_acc"] for r in rows) == run.res["best_test_acc"]
    assert all(0 <= r["test_acc"] <= 100 and r["images_per_s"] > 0 for r in rows)
    assert run.res["best_test_acc"] > 30                           # it learns; chance is 10%
    cfg = json.loads((run.dir / "config.json").read_text())
    assert cfg["world_size"] == 1 and cfg["steps_per_epoch"] == 8 and cfg["freeze_step"] == 8
    assert cfg["fan_in"] == 2 and cfg["batch_size"] == 64 and cfg["epochs"] == 2
    last = _ckpt(run.dir / "last.pt")["train"]
    assert (last["epoch"], last["batch"], last["step"]) == (2, 0, 16)
    assert last["best_acc"] == run.res["best_test_acc"]
    best_epoch = 1 + [r["test_acc"] for r in rows].index(run.res["best_test_acc"])
    assert _ckpt(run.dir / "best.pt")["train"]["epoch"] == best_epoch


def test_eval_checkpoint_and_onnx_agree(run, tmp_path):
    pt = run_cli_json("eval", run.dir / "best.pt", "--data", "synthetic")
    rep = run_cli_json("compile", run.dir / "best.pt", "-o", tmp_path / "m.onnx")
    ort_res = run_cli_json("eval", tmp_path / "m.onnx", "--data", "synthetic")
    assert ort_res["runtime"] == "onnxruntime" and pt["runtime"] == "pytorch"
    assert ort_res["images"] == pt["images"] == 256
    # the compiled model is the trained one: the same test images right, to the image
    assert ort_res["acc"] == pt["acc"]
    # and the checkpoint is the one training called best, scoring what training measured
    assert pt["acc"] == pytest.approx(run.res["best_test_acc"], abs=1e-9)
    assert rep["removed"] == _dead(mcgraph.load(run.dir / "best.pt"))
    sub = run_cli_json("eval", tmp_path / "m.onnx", "--data", "synthetic", "--max-samples", "100")
    assert sub["images"] == 100


def test_inspect_png(run, tmp_path):
    r = run_cli_ok("inspect", run.dir / "best.pt", "--png", tmp_path / "c.png")
    assert _is_png_picture(tmp_path / "c.png")
    assert r.stdout.splitlines()[-1] == "dead after freeze: " + (
        ", ".join(_dead(mcgraph.load(run.dir / "best.pt"))) or "none")
    data = run_cli_json("inspect", run.dir / "best.pt")
    assert all(m["frozen"] for m in data["modules"])                # trained past --freeze-at


def test_resume_continues_from_last(run):
    before = {f: (run.dir / f).read_bytes() for f in ("last.pt", "best.pt", "metrics.jsonl")}
    res = run_cli_json("train", "resnet20", "--data", "synthetic", "--out", run.dir, "--resume")
    assert res["epochs_done"] == 2 and res["steps"] == 16       # already finished: nothing more
    assert {f: (run.dir / f).read_bytes() for f in before} == before


def test_stopped_run_resumes_to_the_uninterrupted_result(run, tmp_path):
    d = tmp_path / "run"
    res = run_cli_json(*TRAIN, "--out", d, "--max-steps", "12")
    assert (res["stopped"], res["steps"], res["epochs_done"]) == ("max_steps", 12, 1)
    assert _ckpt(d / "last.pt")["train"]["step"] == 12
    # the saved run's settings (2 epochs, batch 64, K=2) come back without repeating them
    res = run_cli_json("train", "resnet20", "--data", "synthetic", "--out", d, "--resume")
    assert (res["stopped"], res["steps"], res["epochs_done"]) == ("done", 16, 2)
    assert res["best_test_acc"] == run.res["best_test_acc"]
    # the same model and the same metrics every epoch (the resumed epoch's train loss and
    # accuracy include the batches before the stop); only the timings differ
    assert metrics_rows(d) == metrics_rows(run.dir)          # without the timings
    got, want = _ckpt(d / "last.pt")["state_dict"], _ckpt(run.dir / "last.pt")["state_dict"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), "resumed weights differ"


def test_demo_end_to_end_on_synthetic(tmp_path):
    d = tmp_path / "d"
    res = run_cli_json("demo", "--data", "synthetic", "--epochs", "1", "--out", d)
    assert res["test_acc_onnxruntime"] == res["test_acc_pytorch"]
    assert res["onnx_max_abs_diff"] < 1e-4 and res["fan_in"] == 1 and res["epochs"] == 1
    ckpt = mcgraph.load(res["checkpoint"])
    removed = res["removed"]
    assert removed == _dead(ckpt)
    assert res["modules_before"] == 9 and res["modules_after"] == 9 - len(removed)
    block_params = sum(p.numel() for b in removed for p in ckpt.get_submodule(b).parameters())
    assert res["params_before"] == mcgraph.count_params(ckpt)
    assert res["params_after"] == res["params_before"] - block_params
    assert (res["params_after"] < res["params_before"]) == bool(removed)
    convs = sum(isinstance(m, torch.nn.Conv2d)
                for b in removed for m in ckpt.get_submodule(b).modules())
    assert model_convs(d / "model.onnx") == 19 - convs and model_convs(d / "original.onnx") == 19
    x = rand(4, 1, 16, 16, seed=5)
    with torch.no_grad():
        ref = ckpt.eval()(x)
    assert_same_outputs(ref, ort_logits(d / "model.onnx", x))
    assert res["onnx_path"] == str(d / "model.onnx") and _is_png_picture(d / "connectivity.png")


@pytest.mark.parametrize("args,reason", [
    (["train", "resnet20", "--data", "cifar10", "--out", "r"], ("cifar10", "needs --data-dir")),
    (["train", "resnet20", "--data", "fashion-mnist", "--data-dir", "nowhere", "--out", "r"],
     ("fashion-mnist", "nowhere")),
    (["train", "resnet20", "--data", "mnist2", "--out", "r"], ("unknown dataset", "mnist2")),
    (["train", "resnet21", "--data", "synthetic", "--out", "r"], ("unknown model", "resnet21")),
    (["train", "resnet20", "--data", "synthetic", "--device", "cuda", "--out", "r"], "CUDA"),
    (["eval", "nothere.onnx", "--data", "synthetic"], ("nothere.onnx", "does not exist")),
])
def test_bad_training_input(tmp_path, monkeypatch, args, reason):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli(*args), reason)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("metrics.jsonl"))


# ------------------------------------------------------- SIGTERM, --save-every, resume overrides
SMALL = ("train", "resnet20", "--data", "synthetic", "--epochs", "2", "--batch-size", "64",
         "--val-size", "0", "--max-train-samples", "256", "--no-progress")   # 4 steps per epoch


def test_sigterm_exits_like_ctrl_c(tmp_path, monkeypatch):
    import signal

    from mcgraph.train.loop import Trainer

    def unhandled(*_):
        raise RuntimeError("SIGTERM reached the default handler")
    monkeypatch.setattr(signal, "_mcgraph_test_old", signal.signal(signal.SIGTERM, unhandled),
                        raising=False)
    real = Trainer.train_step

    def step(self, *a):
        if self.step == 2:
            signal.raise_signal(signal.SIGTERM)
        return real(self, *a)
    monkeypatch.setattr(Trainer, "train_step", step)
    try:
        r = run_cli(*SMALL, "--out", tmp_path / "run")
    finally:
        signal.signal(signal.SIGTERM, signal._mcgraph_test_old)
    assert r.exit_code == 130, (r.exit_code, r.output, r.exception)
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: train: interrupted by SIGTERM at epoch 1, step 3")
    assert "--resume" in line
    assert _ckpt(tmp_path / "run/last.pt")["train"]["step"] == 3


def test_save_every_option_writes_last_between_epoch_ends(tmp_path, monkeypatch):
    from mcgraph.train import loop
    saved, real = [], loop.save_training
    monkeypatch.setattr(loop, "save_training", lambda path, *a, **k: saved.append(
        (path.name, k["step"], k["batch"])) or real(path, *a, **k))
    res = run_cli_json(*SMALL, "--save-every", "3", "--out", tmp_path / "run")
    assert res["steps"] == 8
    last = [(s, b) for name, s, b in saved if name == "last.pt"]
    assert last == [(3, 3), (4, 0), (6, 2), (8, 0)]        # steps 3 and 6, and each epoch's end
    assert json.loads((tmp_path / "run/config.json").read_text())["save_every"] == 3


def test_resume_with_a_new_lr_from_the_cli(tmp_path):
    d = tmp_path / "run"
    run_cli_json(*SMALL, "--out", d, "--max-steps", "3", "--lr", "0.05")
    r = run_cli_ok(*SMALL, "--out", d, "--resume", "--lr", "0.01", "--json")
    assert json.loads(r.stdout)["steps"] == 8                  # stdout stays JSON
    [notice] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "lr 0.05 -> 0.01" in notice and "step 3" in notice, r.stderr
    assert json.loads((d / "config.json").read_text())["resumed"][0]["lr"] == [0.05, 0.01]


def test_resume_refuses_a_changed_epoch_count_from_the_cli(tmp_path):
    d = tmp_path / "run"
    run_cli_json(*SMALL, "--out", d, "--max-steps", "3")
    before = (d / "last.pt").read_bytes()
    line = assert_one_line_error(run_cli(*SMALL[:4], "--epochs", "5", *SMALL[6:], "--out", d,
                                         "--resume"))
    assert line.startswith("error: train: --epochs 5 differs from the saved run's 2"), line
    assert "--lr" in line and (d / "last.pt").read_bytes() == before
