"""--resume with new learning rates: taken, announced and recorded; unsafe changes refused."""
import json
import math

import pytest
import torch
from helpers import metrics_rows, train_config
from torch import nn

from mcgraph import McGraphError
from mcgraph.train.loop import Trainer, train


def _notices(err):
    return [ln for ln in err.splitlines() if "->" in ln]


def test_resume_takes_new_learning_rates_says_so_and_records_them(tmp_path, synthetic, capsys):
    first = train(train_config(tmp_path, max_steps=5), data=synthetic)
    assert first.steps == 5
    capsys.readouterr()
    res = train(train_config(tmp_path, resume=True, lr=0.01, mask_lr=0.02), data=synthetic,
                given=("lr", "mask_lr"))
    assert res.steps == 14
    [notice] = _notices(capsys.readouterr().err)
    assert "step 5" in notice and "lr 0.05 -> 0.01" in notice and "mask_lr 0.05 -> 0.02" in notice
    # the optimizer runs on the new rates: the weights' schedule (cosine over 14 steps) scaled
    rows = metrics_rows(tmp_path / "run", drop=())
    assert rows[0]["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 7 / 14)))
    assert rows[1]["lr"] == pytest.approx(0.0, abs=1e-12) and rows[1]["mask_lr"] == 0.02
    assert rows[0]["overrides"] == {"step": 5, "lr": [0.05, 0.01], "mask_lr": [0.05, 0.02]}
    assert "overrides" not in rows[1]
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    assert (cfg["lr"], cfg["mask_lr"]) == (0.01, 0.02)
    assert cfg["resumed"] == [{"step": 5, "epoch": 1, "lr": [0.05, 0.01], "mask_lr": [0.05, 0.02]}]
    t = torch.load(tmp_path / "run/last.pt", weights_only=True)["train"]
    assert (t["config"]["lr"], t["config"]["mask_lr"]) == (0.01, 0.02)   # a later resume keeps them
    groups = t["optimizer"]["param_groups"]
    assert (groups[0]["initial_lr"], groups[1]["lr"]) == (0.01, 0.02)


def test_the_new_rate_is_the_one_the_steps_use(tmp_path, synthetic):
    """Resumed at step 5 with lr 0.01: the same weights as resuming a copy of that last.pt
    edited by hand so that its config, optimizer and schedule say 0.01."""
    train(train_config(tmp_path / "a", max_steps=5), data=synthetic)
    ckpt = torch.load(tmp_path / "a/run/last.pt", weights_only=True)
    t = ckpt["train"]
    t["config"]["lr"] = 0.01
    t["scheduler"]["base_lrs"][0] = t["optimizer"]["param_groups"][0]["initial_lr"] = 0.01
    t["optimizer"]["param_groups"][0]["lr"] = 0.01 * (0.5 * (1.0 + math.cos(math.pi * (5 / 14))))
    t["scheduler"]["_last_lr"][0] = t["optimizer"]["param_groups"][0]["lr"]
    (tmp_path / "b/run").mkdir(parents=True)
    torch.save(ckpt, tmp_path / "b/run/last.pt")
    (tmp_path / "b/run/metrics.jsonl").write_text("")
    train(train_config(tmp_path / "a", resume=True, lr=0.01), data=synthetic, given=("lr",))
    # from Python a setting other than its default counts as given: b states its saved rate
    train(train_config(tmp_path / "b", resume=True, lr=0.01), data=synthetic)
    a = torch.load(tmp_path / "a/run/last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b/run/last.pt", weights_only=True)["state_dict"]
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]
    train(train_config(tmp_path / "c", max_steps=5), data=synthetic)
    train(train_config(tmp_path / "c", resume=True), data=synthetic)   # the old rate: other weights
    c = torch.load(tmp_path / "c/run/last.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_giving_the_saved_values_again_is_silent(tmp_path, synthetic, capsys):
    train(train_config(tmp_path, epochs=1, max_steps=2), data=synthetic)
    capsys.readouterr()
    res = train(train_config(tmp_path, epochs=1, resume=True), data=synthetic,
                given=("lr", "mask_lr", "epochs", "batch_size", "data"))
    assert res.steps == 7 and _notices(capsys.readouterr().err) == []
    assert "resumed" not in json.loads((tmp_path / "run/config.json").read_text())


@pytest.mark.parametrize("field,value,saved", [("epochs", 3, 2), ("batch_size", 32, 64),
                                               ("freeze_at", 0.5, 0.3), ("data", "fashion-mnist",
                                                                         "synthetic")])
def test_resume_refuses_a_change_that_is_not_safe_mid_run(tmp_path, synthetic, field, value, saved):
    train(train_config(tmp_path, max_steps=2), data=synthetic)
    before = (tmp_path / "run/last.pt").read_bytes()
    with pytest.raises(McGraphError) as e:
        train(train_config(tmp_path, resume=True, **{field: value}), data=synthetic, given=(field,))
    msg = str(e.value)
    assert e.value.option[0] == field
    assert f"{field} {value} differs from the saved run's {saved}" in msg, msg
    assert "only lr, mask_lr, save_every" in msg, msg
    assert (tmp_path / "run/last.pt").read_bytes() == before


def test_a_run_stopped_by_nan_continues_with_a_lower_lr(tmp_path, synthetic, monkeypatch):
    """The case --resume overrides exist for: a run diverges; continue it from its last good
    checkpoint, slower."""
    real_step, real_ce, at = Trainer.train_step, nn.functional.cross_entropy, {"step": 0}

    def tracked(self, *a):
        at["step"] = self.step
        return real_step(self, *a)
    monkeypatch.setattr(Trainer, "train_step", tracked)
    monkeypatch.setattr(nn.functional, "cross_entropy",
                        lambda *a, **k: real_ce(*a, **k) * (float("inf") if at["step"] == 9
                                                            else 1.0))
    with pytest.raises(McGraphError, match=r"loss is not finite \(inf\) at epoch 2, step 10; .*"
                                           r"\(epoch 2, step 9\)"):
        train(train_config(tmp_path, save_every=3), data=synthetic)
    monkeypatch.undo()
    res = train(train_config(tmp_path, resume=True, lr=0.02), data=synthetic, given=("lr",))
    assert res.steps == 14 and res.stopped == "done"
    assert json.loads((tmp_path / "run/config.json").read_text())["resumed"][0]["step"] == 9
