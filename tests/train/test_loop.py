"""The trainer: masks learn the useful input, resume is exact, fixed-prev is the original ResNet."""
import json
import os
import signal
import threading

import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, metrics_rows, rand, train_config
from torch import nn
from zoo import SignalNet

import mcgraph
from mcgraph import McGraphError, deploy
from mcgraph.masks import mask_modules
from mcgraph.train.config import TrainConfig
from mcgraph.train.loop import Interrupted, train


# ------------------------------------------------------------------ learning picks the signal
def test_masks_move_toward_the_input_that_carries_the_signal(tmp_path, synthetic):
    masked = mcgraph.rewrite(SignalNet(), fan_in=1, init="uniform", modules=["s0", "s1", "b"],
                             example_input=torch.zeros(1, 1, 16, 16))
    res = train(train_config(tmp_path, epochs=40, batch_size=64, lr=0.05, mask_lr=0.05,
                             freeze_at=1.0), data=synthetic, model=masked)
    assert res.steps == 40 * 7
    mc = {m.target: m for m in mask_modules(masked)}["b"]
    assert mc.candidates == ["stem_1", "s0", "s1"]
    values = mc.mask.detach()
    assert mc.topk().tolist() == [0], values           # the stem is chosen
    assert values[0] > values[1:].max() + 0.3, values
    assert res.last_acc > 80
    assert res.best_acc is None          # masks never froze: no epoch is ready to compile


# ------------------------------------------------------------------ resume is exact
def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not bad, bad[:5]


@pytest.mark.parametrize("stop_at", [7, 5])      # at the epoch boundary, and mid-epoch
def test_stop_and_resume_equals_uninterrupted(tmp_path, synthetic, stop_at):
    kw = dict(epochs=2, mask_lr=0.05, freeze_at=0.75)
    full = train(train_config(tmp_path / "a", **kw), data=synthetic)
    first = train(train_config(tmp_path / "b", max_steps=stop_at, **kw), data=synthetic)
    assert first.stopped == "max_steps" and first.steps == stop_at
    second = train(train_config(tmp_path / "b", resume=True, **kw), data=synthetic)
    assert second.steps == full.steps == 14
    _states_equal(mcgraph.load(tmp_path / "a/run/last.pt"),
                  mcgraph.load(tmp_path / "b/run/last.pt"))
    assert [r["epoch"] for r in metrics_rows(tmp_path / "b/run")] == [1, 2]
    # the resumed epoch's metrics include the batches before the stop: only timings differ
    assert metrics_rows(tmp_path / "b/run") == metrics_rows(tmp_path / "a/run")


def test_ctrl_c_saves_and_resumes(tmp_path, synthetic):
    cfg = train_config(tmp_path, epochs=200)
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted, match="continue with resume=True"):
            train(cfg, data=synthetic)
    finally:
        timer.cancel()
    ckpt = torch.load(tmp_path / "run/last.pt", weights_only=True)
    step = ckpt["train"]["step"]
    assert step > 0
    # from Python, a setting other than its default counts as given: the saved run's epochs
    res = train(train_config(tmp_path, resume=True, epochs=200, max_steps=step + 3),
                data=synthetic)
    assert res.steps == step + 3


def test_nan_loss_stops_with_a_reason_and_keeps_the_last_good_state(tmp_path, synthetic):
    train(train_config(tmp_path, epochs=3, weight_decay=0, max_steps=4), data=synthetic)
    good = (tmp_path / "run/last.pt").read_bytes()
    with pytest.raises(McGraphError, match="already holds a run"):     # never mixed with it
        train(train_config(tmp_path, epochs=3, weight_decay=0), data=synthetic)
    with pytest.raises(McGraphError, match="(loss|weights) (is|are) not finite.*last good "
                                           "checkpoint"):
        train(train_config(tmp_path, lr=1e12, weight_decay=0, epochs=3, resume=True),
              data=synthetic)
    # the diverged continuation never finished an epoch, so nothing replaced a good checkpoint
    # with a diverged one, and no temp file is left
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock", "config.json", "last.pt", "metrics.jsonl"]
    assert (tmp_path / "run/last.pt").read_bytes() == good


# ------------------------------------------------------------------ fixed rules
def test_fixed_prev_is_the_original_resnet_operator_for_operator(tmp_path, synthetic):
    res = train(train_config(tmp_path, connectivity="fixed-prev", epochs=1), data=synthetic)
    masked = mcgraph.load(tmp_path / "run/last.pt")
    assert all(bool(m.frozen) and m.selected().tolist() == [m.num_candidates - 1]
               for m in mask_modules(masked))
    slim, rep = mcgraph.compile(masked)
    assert rep.removed == [] and res.steps == 7
    original = mcgraph.create_model("resnet20", num_classes=10, in_channels=1)
    assert slim.state_dict().keys() == original.state_dict().keys()
    original.load_state_dict(slim.state_dict())
    x = rand(4, 1, 16, 16)
    assert_same_outputs(eval_outputs(original, x), eval_outputs(slim, x), rel=1e-6)
    a = mcgraph.export_onnx(slim, tmp_path / "slim.onnx", (1, 16, 16))
    b = mcgraph.export_onnx(original, tmp_path / "orig.onnx", (1, 16, 16))
    assert deploy.op_counts(a) == deploy.op_counts(b)


def test_fixed_random_and_full_never_change(tmp_path, synthetic):
    for mode in ("fixed-random", "fixed-full"):
        res = train(train_config(tmp_path / mode, connectivity=mode, epochs=1), data=synthetic)
        assert all(r["chosen_changed"] == 0 and r["masks_frozen"] for r in res.metrics)
        m = mcgraph.load(tmp_path / mode / "run/last.pt")
        k = [int(mc.chosen.sum()) for mc in mask_modules(m)]
        assert k == ([min(2, mc.num_candidates) for mc in mask_modules(m)] if mode == "fixed-random"
                     else [mc.num_candidates for mc in mask_modules(m)])


def test_learned_run_writes_its_files(tmp_path, synthetic):
    res = train(train_config(tmp_path, epochs=2, mask_lr=0.05, freeze_at=0.5), data=synthetic)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "last.pt", "best.pt",
                                               ".lock"}
    rows = metrics_rows(run, drop=())
    for key in ("train_loss", "train_acc", "val_acc", "test_acc", "lr", "mask_lr", "mask_entropy",
                "chosen_changed", "images_per_s", "seconds"):
        assert key in rows[0]
    assert rows[0]["masks_frozen"] is False and rows[1]["masks_frozen"] is True
    # the freeze happened in epoch 2 (step 7 of 14): its row says how decisive top-K was
    assert "freeze" not in rows[0] and rows[1]["freeze"]["epoch"] == 2
    # K=2: layer1.0 (1 candidate) and layer1.1 (2) read all theirs; 7 rows choose
    assert rows[1]["freeze"]["rows"] == 7 and 0 <= rows[1]["freeze"]["close"] <= 7
    best = max(rows, key=lambda r: r["val_acc"])
    assert (res.best_epoch, res.best_acc, res.best_val_acc) == (best["epoch"], best["test_acc"],
                                                               best["val_acc"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["device"] == ("cuda" if torch.cuda.is_available() else "cpu")   # device auto
    assert cfg["rewrite"]["input_shape"] == [1, 16, 16]


def test_device_fallback_and_errors(tmp_path, synthetic):
    from mcgraph.device import resolve_device
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(McGraphError, match="no CUDA device"):
            resolve_device("cuda")
        assert deploy.providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(McGraphError, match="nothing to resume"):
        train(train_config(tmp_path, resume=True), data=synthetic)
    masked = mcgraph.rewrite("resnet20", fan_in=1, in_channels=1, input_size=(28, 28))
    mcgraph.save(masked, tmp_path / "m28.pt")
    with pytest.raises(McGraphError, match="rewritten for inputs \\[1, 28, 28\\]"):
        train(train_config(tmp_path, model=str(tmp_path / "m28.pt")), data=synthetic)


def test_resnext_trains_learned_and_fixed_full_unchanged(tmp_path, synthetic):
    res = train(train_config(tmp_path / "l", model="resnext29_2x8d", fan_in=1, epochs=2,
                             mask_lr=0.05), data=synthetic)
    assert len(res.metrics) == 2 and 0 <= res.metrics[0]["mask_entropy"] <= 1
    masked = mcgraph.load(tmp_path / "l/run/last.pt")
    slim, rep = mcgraph.compile(masked)
    assert rep.modules_before == 18 and rep.params_after <= rep.params_before
    full = train(train_config(tmp_path / "f", model="resnext29_2x8d", connectivity="fixed-full",
                              epochs=1), data=synthetic)
    assert full.metrics[0]["masks_frozen"] and full.metrics[0]["chosen_changed"] == 0
    _, rep = mcgraph.compile(mcgraph.load(tmp_path / "f/run/last.pt"))
    assert rep.removed == []


def test_renormalize_after_unscale_restores_unit_rms(masked_resnet20):
    from mcgraph.mask_ops import renormalize_mask_grads_
    gm = masked_resnet20(fan_in=2)
    m = mask_modules(gm)[-1]
    m.mask.grad = torch.linspace(-1, 1, m.num_candidates) / 65536.0   # what unscale_ leaves
    renormalize_mask_grads_(gm)
    g = m.mask.grad
    assert abs(float(g.pow(2).mean().sqrt()) - 1) < 1e-5 and abs(float(g.mean())) < 1e-6


# ------------------------------------------------------------------ selection never reads test
def test_best_is_chosen_on_validation_never_on_test(tmp_path, synthetic):
    from mcgraph.train.data import Data, TensorImageDataset
    from mcgraph.train.split import split_validation
    d = split_validation(synthetic, 100)
    # validation labels shifted by one class: the better the model, the lower its validation
    # accuracy, so choosing on validation picks an early epoch while test accuracy keeps rising
    d = Data(d.spec, d.train, d.test, TensorImageDataset(d.val.images, (d.val.labels + 1) % 10))
    res = train(train_config(tmp_path, epochs=4, connectivity="fixed-prev", fan_in=1), data=d)
    rows = metrics_rows(tmp_path / "run")
    val, test = [r["val_acc"] for r in rows], [r["test_acc"] for r in rows]
    chosen = val.index(max(val)) + 1
    assert chosen != test.index(max(test)) + 1, (val, test)    # the splits disagree: it can tell
    assert torch.load(tmp_path / "run/best.pt", weights_only=True)["train"]["epoch"] == chosen
    assert (res.best_epoch, res.best_acc, res.best_val_acc) == (chosen, test[chosen - 1], max(val))


def test_mask_grad_samples_and_augment_reach_the_step(tmp_path, synthetic, monkeypatch):
    from mcgraph.train import distributed as D
    from mcgraph.train import loop
    from mcgraph.train.loop import Trainer
    seen = []
    real = loop.make_loader
    monkeypatch.setattr(loop, "make_loader",
                        lambda *a, **k: seen.append(k["augment"]) or real(*a, **k))
    cfg = train_config(tmp_path, mask_grad_samples=8, augment=False, max_steps=1)
    t = Trainer(cfg, torch.device("cpu"), D.init(torch.device("cpu")), synthetic)
    assert {m.grad_samples for m in mask_modules(t.model)} == {8}
    t.run()
    assert seen and not any(seen)                 # no loader augmented, training included
    t = Trainer(train_config(tmp_path / "b"), torch.device("cpu"), D.init(torch.device("cpu")),
                synthetic)
    assert {m.grad_samples for m in mask_modules(t.model)} == {None}     # default: whole batch
    assert t._loader("train", 0).augment


# ------------------------------------------------------------------ SIGTERM, --save-every, NaN
@pytest.fixture
def sigterm_guard():
    """Without the trainer's own handler SIGTERM would end pytest: make it a test failure."""
    def unhandled(*_):
        raise RuntimeError("SIGTERM reached the default handler: the trainer did not catch it")
    old = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, old)


def _signal_at(monkeypatch, step, *signals):
    """Raise ``signals`` (in order) in the process while optimizer step ``step`` runs."""
    from mcgraph.train.loop import Trainer
    real = Trainer.train_step

    def step_and_signal(self, x, y, stop_asked, *rest):
        if self.step + 1 == step:
            for s in signals:
                signal.raise_signal(s)
        return real(self, x, y, stop_asked, *rest)
    monkeypatch.setattr(Trainer, "train_step", step_and_signal)


def test_sigterm_saves_and_stops_like_ctrl_c(tmp_path, synthetic, monkeypatch, sigterm_guard):
    _signal_at(monkeypatch, 3, signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM.*epoch 1, step 3.*continue with resume=True"):
        train(train_config(tmp_path, epochs=2), data=synthetic)
    t = torch.load(tmp_path / "run/last.pt", weights_only=True)["train"]
    assert (t["epoch"], t["batch"], t["step"]) == (0, 3, 3)      # the step it was in finished
    monkeypatch.undo()
    full = train(train_config(tmp_path / "full", epochs=2), data=synthetic)
    res = train(train_config(tmp_path, resume=True, epochs=2), data=synthetic)
    assert res.steps == full.steps == 14
    _states_equal(mcgraph.load(tmp_path / "run/last.pt"),
                  mcgraph.load(tmp_path / "full/run/last.pt"))


def test_a_second_signal_aborts(tmp_path, synthetic, monkeypatch, sigterm_guard):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_at(monkeypatch, 2, signal.SIGTERM, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(train_config(tmp_path, epochs=1), data=synthetic)
    assert not (tmp_path / "run/last.pt").exists()
    # the handlers are put back when the loop ends
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler saves anything."""


def test_save_every_writes_last_mid_epoch_and_a_kill_resumes_exactly(tmp_path, synthetic,
                                                                     monkeypatch):
    from mcgraph.train.loop import Trainer
    full = train(train_config(tmp_path / "full", epochs=2), data=synthetic)
    real = Trainer.train_step

    def killed_at_5(self, *a):
        if self.step == 12:                          # step 13 dies, right after the save at 12
            raise Killed
        return real(self, *a)
    monkeypatch.setattr(Trainer, "train_step", killed_at_5)
    with pytest.raises(Killed):
        train(train_config(tmp_path, epochs=2, save_every=3), data=synthetic)
    t = torch.load(tmp_path / "run/last.pt", weights_only=True)["train"]
    # saves at steps 3, 6 (epoch 1), the epoch end (7), then 9 and 12 (epoch 2, batches 2 and 5)
    assert (t["epoch"], t["batch"], t["step"]) == (1, 5, 12)
    monkeypatch.undo()
    res = train(train_config(tmp_path, resume=True, epochs=2), data=synthetic)
    assert res.steps == full.steps == 14
    _states_equal(mcgraph.load(tmp_path / "run/last.pt"),
                  mcgraph.load(tmp_path / "full/run/last.pt"))
    assert metrics_rows(tmp_path / "run") == metrics_rows(tmp_path / "full/run")


def test_save_every_is_validated():
    with pytest.raises(McGraphError, match="save_every must be >= 1"):
        TrainConfig(model="resnet20", save_every=0)


def _nan_at(monkeypatch, step):
    """The training loss of optimizer step ``step`` (1-based) is NaN."""
    from mcgraph.train.loop import Trainer
    real_step, real_ce = Trainer.train_step, nn.functional.cross_entropy
    state = {"step": 0}

    def ce(*a, **k):
        loss = real_ce(*a, **k)
        return loss * float("nan") if state["step"] + 1 == step else loss

    def tracked(self, *a):
        state["step"] = self.step
        return real_step(self, *a)
    monkeypatch.setattr(Trainer, "train_step", tracked)
    monkeypatch.setattr(nn.functional, "cross_entropy", ce)


def test_nan_names_the_step_the_loss_and_the_last_good_checkpoint(tmp_path, synthetic, monkeypatch):
    _nan_at(monkeypatch, 5)
    with pytest.raises(McGraphError) as e:
        train(train_config(tmp_path, epochs=2, save_every=2), data=synthetic)
    msg = str(e.value)
    assert "\n" not in msg
    assert "loss is not finite (nan) at epoch 1, step 5" in msg, msg
    assert f"last good checkpoint: {tmp_path / 'run/last.pt'} (epoch 1, step 4)" in msg, msg
    assert torch.load(tmp_path / "run/last.pt", weights_only=True)["train"]["step"] == 4


def test_nan_before_any_checkpoint_says_there_is_none(tmp_path, synthetic, monkeypatch):
    _nan_at(monkeypatch, 1)
    with pytest.raises(McGraphError, match=r"loss is not finite \(nan\) at epoch 1, step 1; .*"
                                           r"no checkpoint of this run yet"):
        train(train_config(tmp_path, epochs=1), data=synthetic)
    assert not (tmp_path / "run/last.pt").exists()


def test_non_finite_weights_are_never_saved(tmp_path, synthetic, monkeypatch):
    from mcgraph.train.loop import Trainer
    real = Trainer.train_step

    def poisoned(self, *a):
        out = real(self, *a)
        if self.step == 4:                     # the update of step 4 went bad, its loss did not
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return out
    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(McGraphError, match=r"weights are not finite after step 4 .*last good "
                                           r"checkpoint: .*last.pt \(epoch 1, step 2\)"):
        train(train_config(tmp_path, epochs=1, save_every=2), data=synthetic)
    ckpt = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert ckpt["train"]["step"] == 2
    assert all(bool(torch.isfinite(v).all())
               for v in ckpt["state_dict"].values() if v.is_floating_point())
