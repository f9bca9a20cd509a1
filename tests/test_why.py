"""The "why this input" instrument (mcgraph.why): on a planted network it ranks the input that
carries the signal first; it handles K > 1 and branch level; the trainer records it at the freeze;
``mcgraph inspect --why`` prints and draws it."""
import json

import pytest
import torch
from helpers import masked_resnet20, run_cli_ok, train_config
from zoo import SignalNet

import mcgraph
from mcgraph.masks import mask_modules
from mcgraph.train.loop import train
from mcgraph.train.split import split_validation
from mcgraph.why import live_rows, spearman, why


def test_spearman_with_ties_and_degenerate_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)      # average ranks
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


@pytest.fixture(scope="module")
def planted(synthetic, tmp_path_factory):
    """SignalNet trained with its masks learning (uniform start), frozen after half the steps."""
    torch.manual_seed(0)
    masked = mcgraph.rewrite(SignalNet(), fan_in=1, init="uniform", modules=["s0", "s1", "b"],
                             example_input=torch.zeros(1, 1, 16, 16))
    out = tmp_path_factory.mktemp("planted")
    res = train(train_config(out, epochs=12, batch_size=64, lr=0.05, mask_lr=0.05,
                             freeze_at=0.5, val_size=64), data=synthetic, model=masked)
    return masked, res, out / "run"


def test_the_instrument_ranks_the_planted_input_first(planted, synthetic):
    masked, _, _ = planted
    report = why(masked, split_validation(synthetic, 64), batches=2, batch_size=32)
    [row] = [r for r in report.rows if r.mask == "b"]
    assert row.chosen == "stem_1" and row.picked_best and row.margin > 0.1, row
    assert set(row.candidates) == {"stem_1", "s0", "s1"}
    assert row.loss[0] < min(row.loss[1:])
    assert row.spearman is not None and row.spearman > 0       # m~ orders them as the loss does
    assert report.summary()["picked_best"] >= 1 and report.images == 64


def test_the_trainer_records_it_at_the_freeze(planted):
    _, res, out = planted
    [freeze] = [r["freeze"] for r in res.metrics if "freeze" in r]
    w = freeze["why"]
    assert w["rows"] and w["picked_best"] <= w["rows"] == len(w["per_row"])
    assert {"chosen", "best_other", "margin", "spearman"} <= set(w["per_row"][0])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("why" in r.get("freeze", {}) for r in logged)


@pytest.mark.parametrize("fan_in", [1, 3])
def test_rows_and_slots_at_module_level(synthetic, fan_in):
    gm = masked_resnet20(fan_in=fan_in, init="random", seed=1)
    report = why(gm, split_validation(synthetic, 64), batches=1, batch_size=32)
    rows = live_rows(gm)
    want = sum(min(m.fan_in, m.num_candidates) for m, _ in rows
               if m.num_candidates > m.fan_in)
    assert len(report.rows) == want                 # one entry per chosen input of a live row
    for w in report.rows:
        m = next(m for m in mask_modules(gm) if m.target == w.mask)
        assert len(w.candidates) == len(w.loss) == len(w.m) == 1 + m.num_candidates - m.fan_in
        assert w.picked_best == (w.margin >= 0)
    assert all(not m.is_frozen for m in mask_modules(gm))       # the model was not touched


def test_branch_level_rows_are_streams(synthetic):
    gm = mcgraph.rewrite("resnext29_2x8d", 1, "random", in_channels=1, input_size=(16, 16))
    report = why(gm, split_validation(synthetic, 64), batches=1, batch_size=32)
    blocks = {m.target for m in mask_modules(gm)}
    assert {w.mask for w in report.rows} == blocks
    assert {w.row for w in report.rows} == {0, 1}             # C = 2 streams per block


def test_inspect_why_prints_a_table_and_draws(tmp_path):
    ck = tmp_path / "m.pt"
    mcgraph.save(masked_resnet20(fan_in=1, init="random", seed=2), ck)
    r = run_cli_ok("inspect", ck, "--why", "--data", "synthetic", "--why-batches", "1",
                   "--png", tmp_path / "c.png")
    assert "picked the loss-best input" in r.stdout and "spearman" in r.stdout
    assert (tmp_path / "c.png").is_file() and (tmp_path / "c_why.png").is_file()
    data = json.loads(run_cli_ok("inspect", ck, "--why", "--data", "synthetic", "--json",
                                 "--why-batches", "1").stdout)
    assert data["why"]["summary"]["rows"] == len(data["why"]["rows"]) > 0
