"""The experiment runner: a tiny grid runs, re-runs skip, stopped runs resume, specs are checked."""
import json
import re

import pytest
from helpers import assert_one_line_error, run_cli, run_cli_ok

import mcgraph.train.loop as loop
from mcgraph import McGraphError
from mcgraph.experiment import (
    load_spec,
    parse_spec,
    plan,
    resolve_refs,
    run_experiment,
    select_best,
)
from mcgraph.experiment.runner import read_metrics

# tiny: 256 synthetic 16x16 images, 4 steps per epoch, cheap evaluation
RECIPE = {"data": "synthetic", "epochs": 2, "batch_size": 64, "eval_batch_size": 256, "lr": 0.05,
          "max_train_samples": 256, "bn_recalibration_batches": 2}
KW = dict(progress=False, latency_repeats=(2, 2))
KEYS = {"table", "config", "model", "seed", "run", "connectivity", "fan_in", "status", "best_epoch",
        "best_val_acc", "test_acc", "final_test_acc", "params_train", "params_test", "blocks_total",
        "blocks_kept", "latency_ms_b1", "latency_ms_b64", "train_seconds", "epochs", "machine",
        "finished_at"}


def _spec(tmp, configs, recipe=RECIPE, name="spec.json", **table):
    spec = {"tables": [{"name": "t1", "recipe": recipe, "models": ["resnet20"], "seeds": [0],
                        "configs": configs, **table}]}
    path = tmp / name
    path.write_text(json.dumps(spec))
    return path


GRID = [{"name": "fixed-prev", "connectivity": "fixed-prev", "fan_in": 1},
        {"name": "learned-k1", "connectivity": "learned", "fan_in": 1, "freeze_at": 0.5}]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = _spec(tmp, GRID, compare=[["learned-k1", "fixed-prev"]])
    logs = []
    results = run_experiment(spec, tmp / "runs", render_to=str(tmp / "docs" / "results.md"),
                             log=logs.append, **KW)
    return tmp, spec, results, logs


def test_grid_runs_and_records(grid):
    tmp, _, results, _ = grid
    assert [r["config"] for r in results] == ["fixed-prev", "learned-k1"]
    for r in results:
        d = tmp / "runs" / r["run"]
        assert r == json.loads((d / "result.json").read_text())
        assert KEYS <= set(r) and r["status"] == "done" and r["epochs"] == 2
        rows = read_metrics(d)
        assert [x["epoch"] for x in rows] == [1, 2]
        assert r["test_acc"] == select_best(rows)["test_acc"]
        assert r["final_test_acc"] == rows[-1]["test_acc"]
        assert r["train_seconds"] == pytest.approx(sum(x["seconds"] for x in rows))
        assert (d / "connectivity.png").is_file() and not (d / "model.onnx").exists()
        assert r["latency_ms_b1"] > 0 and r["latency_ms_b64"] > 0
    prev, learned = results
    assert prev["blocks_kept"] == prev["blocks_total"] == 9
    assert prev["params_train"] == prev["params_test"]
    assert learned["params_train"] >= learned["params_test"]
    assert learned["blocks_kept"] <= 9


def _table_rows(md):
    """{config: {header: cell}} of the first markdown table."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    heads = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return {r[0]: dict(zip(heads, r)) for r in rows if len(r) == len(heads)}


def test_rendered_numbers_match_the_run_files(grid):
    tmp, _, _, _ = grid
    md = (tmp / "docs" / "results.md").read_text()
    rows = _table_rows(md)
    assert set(rows) == {"fixed-prev", "learned-k1"}
    for config, row in rows.items():
        d = tmp / "runs" / "t1" / config / "resnet20-s0"
        best = select_best(read_metrics(d))              # recomputed from metrics.jsonl
        result = json.loads((d / "result.json").read_text())
        assert row["seeds done"] == "1/1"
        assert row["test acc, mean ± std"] == f"{best['test_acc']:.2f} ± —"
        assert row["test acc, best seed"] == f"{best['test_acc']:.2f}"
        if best.get("val_acc") is not None:
            assert row["val acc, mean"] == f"{best['val_acc']:.2f}"
        assert row["params, test"] == f"{result['params_test']:,}"
        assert row["params, train"] == f"{result['params_train']:,}"
        assert row["blocks kept"] == f"{result['blocks_kept']:.1f}/9"
        assert row["ORT b64 ms"] == f"{result['latency_ms_b64']:.2f}"
    diff = float(rows["learned-k1"]["test acc, mean ± std"].split()[0]) - \
        float(rows["fixed-prev"]["test acc, mean ± std"].split()[0])
    assert re.search(rf"learned-k1 − fixed-prev: {diff:+.2f}", md)
    assets = tmp / "docs" / "results"
    for name in ("t1_curves.png", "t1_acc_vs_params.png", "t1_acc_vs_latency.png",
                 "t1_learned-k1_connectivity.png", "runs/t1/learned-k1/resnet20-s0/metrics.jsonl"):
        assert (assets / name).is_file() and f"results/{name.split('/')[0]}" in md


def test_rerun_skips_finished_runs(grid, monkeypatch):
    tmp, spec, results, _ = grid
    files = [tmp / "runs" / r["run"] / "result.json" for r in results]
    mtimes = [f.stat().st_mtime_ns for f in files]

    def no_training(cfg, *a, **k):
        raise AssertionError(f"train called for {cfg.out}")
    monkeypatch.setattr(loop, "train", no_training)
    logs = []
    again = run_experiment(spec, tmp / "runs", log=logs.append, **KW)
    assert again == results
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert sum("skip" in line for line in logs) == 2


def test_dry_run_lists_the_runs(grid, tmp_path):
    tmp, spec, _, _ = grid
    res = run_cli_ok("experiment", spec, "--out", tmp / "runs", "--dry-run")
    assert re.search(r"done\s+t1/fixed-prev/resnet20-s0", res.output)
    assert re.search(r"done\s+t1/learned-k1/resnet20-s0", res.output)
    res = run_cli_ok("experiment", spec, "--out", tmp_path, "--dry-run", "--seeds", "2",
                     "--only", "learned-k1")
    assert re.search(r"new\s+t1/learned-k1/resnet20-s1", res.output)
    assert "fixed-prev" not in res.output
    assert "2 runs: 0 done, 0 resume, 2 new" in res.output


def test_stopped_run_resumes_from_last_pt(tmp_path, monkeypatch):
    cfg = [{"name": "learned", "connectivity": "learned", "fan_in": 1}]
    first = _spec(tmp_path, cfg, {**RECIPE, "max_steps": 3}, "first.json")
    logs = []
    assert run_experiment(first, tmp_path / "runs", log=logs.append, **KW) == []
    d = tmp_path / "runs" / "t1" / "learned" / "resnet20-s0"
    assert (d / "last.pt").is_file() and not (d / "result.json").exists()
    assert any("not finished" in line for line in logs)
    assert [p.state for p in plan(load_spec(first), tmp_path / "runs")] == ["resume"]

    seen = []
    real = loop.train
    monkeypatch.setattr(loop, "train", lambda c, *a, **k: seen.append(c) or real(c, *a, **k))
    results = run_experiment(_spec(tmp_path, cfg, name="second.json"), tmp_path / "runs", **KW)
    assert [c.resume for c in seen] == [True]
    assert len(results) == 1 and (d / "result.json").is_file()
    rows = read_metrics(d)
    assert [r["epoch"] for r in rows] == [1, 2]          # each epoch once
    assert [r["step"] for r in rows] == [4, 8]            # 256 images / 64: the steps continue


def test_resolve_refs(tmp_path):
    other = tmp_path / "learned-k1"
    other.mkdir()
    (other / "result.json").write_text(json.dumps({"blocks_kept": 5, "checkpoint": "best.pt"}))
    opts = {"connectivity": "fixed-chain", "chain_blocks": "run:learned-k1", "lr": 0.1}
    got = resolve_refs(opts, lambda name: tmp_path / name)
    assert got == {"connectivity": "fixed-chain", "chain_blocks": 5, "lr": 0.1}
    got = resolve_refs({"wiring_from": "run:learned-k1"}, lambda name: tmp_path / name)
    assert got == {"wiring_from": str(other / "best.pt")}
    with pytest.raises(McGraphError, match="needs missing finished first"):
        resolve_refs({"chain_blocks": "run:missing"}, lambda name: tmp_path / name)


def test_only_keeps_referenced_configs(tmp_path):
    configs = [
        {"name": "prev", "connectivity": "fixed-prev"},
        {"name": "learned", "connectivity": "learned", "fan_in": 1},
        {"name": "chain", "connectivity": "fixed-chain", "fan_in": 1,
         "chain_blocks": "run:learned"},
        {"name": "wired", "connectivity": "fixed-wiring", "fan_in": 1,
         "wiring_from": "run:learned"}]
    spec = parse_spec({"tables": [{"name": "t", "models": ["resnet20"], "seeds": [0, 1],
                                   "configs": configs}]})
    labels = [p.run.label for p in plan(spec, tmp_path, only=["chain"])]
    assert labels == ["t/learned/resnet20-s0", "t/learned/resnet20-s1", "t/chain/resnet20-s0",
                      "t/chain/resnet20-s1"]


def _bad(table_changes=None, config=None):
    table = {"name": "t", "models": ["resnet20"], "recipe": {"epochs": 1},
             "configs": [{"name": "a", "connectivity": "learned"}] + ([config] if config else [])}
    table.update(table_changes or {})
    return {"tables": [table]}


@pytest.mark.parametrize("spec, match", [
    (_bad(config={"name": "b", "fan_inn": 2}), "config b: unknown key 'fan_inn'"),
    (_bad({"recipe": {"epocs": 2}}), "recipe: unknown key 'epocs'"),
    (_bad({"recipe": {"seed": 2}}), "'seed' is set by the experiment"),
    (_bad({"configs": [{"name": "b", "connectivity": "fixed-chain", "chain_blocks": "run:a"},
                       {"name": "a", "connectivity": "learned"}]}), "which comes later"),
    (_bad(config={"name": "b", "connectivity": "fixed-chain", "chain_blocks": "run:zz"}),
     "which does not exist"),
    (_bad(config={"name": "b", "lr": "run:a"}), "not for lr"),
    (_bad(config={"name": "b", "epochs": 0}), "config b: train: epochs must be >= 1"),
    (_bad({"compare": [["a", "nope"]]}), "compare names 'nope'"),
    (_bad({"colour": 1}), "unknown key"),
    (_bad(config={"name": "a"}), "config 'a' appears twice"),
    ({"tables": []}, "non-empty list"),
])
def test_bad_spec_is_one_error(spec, match):
    with pytest.raises(McGraphError, match=match):
        parse_spec(spec)


def test_bad_spec_stops_before_training_and_cli_exits_2(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained despite a bad spec"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bad(config={"name": "b", "fan_inn": 2})))
    assert_one_line_error(run_cli("experiment", path, "--out", tmp_path / "r"),
                          "unknown key 'fan_inn'")
    assert not (tmp_path / "r").exists()


def test_toml_spec(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[tables]]\nname = "t"\nmodels = ["resnet20"]\nseeds = [0, 1]\n'
                    'compare = [["b", "a"]]\n[tables.recipe]\nepochs = 3\n'
                    '[[tables.configs]]\nname = "a"\nconnectivity = "fixed-prev"\n'
                    '[[tables.configs]]\nname = "b"\nfan_in = 1\n')
    spec = load_spec(path)
    assert spec.tables[0].options("b") == {"epochs": 3, "fan_in": 1}
    assert spec.with_seeds(3).tables[0].seeds == (0, 1, 2)


def test_select_best_uses_validation_never_test():
    rows = [{"epoch": 1, "val_acc": 70.0, "test_acc": 99.0},
            {"epoch": 2, "val_acc": 80.0, "test_acc": 60.0},
            {"epoch": 3, "val_acc": 80.0, "test_acc": 65.0},
            {"epoch": 4, "val_acc": 75.0, "test_acc": 50.0}]
    best = select_best(rows)
    assert best["epoch"] == 2 and best["test_acc"] == 60.0      # first max of val, not max of test
    no_val = [{k: v for k, v in r.items() if k != "val_acc"} for r in rows]
    assert select_best(no_val)["epoch"] == 4                   # the last epoch
    with pytest.raises(McGraphError):
        select_best([])


def test_remeasure_latency_updates_only_the_latencies(grid, tmp_path):
    import shutil

    from mcgraph.experiment.runner import remeasure_latency
    src, spec, results, _ = grid
    shutil.copytree(src / "runs", tmp_path / "runs")
    before = {r["run"]: r for r in results}
    assert remeasure_latency(spec, tmp_path / "runs", repeats=(2, 2), log=lambda s: None) == 2
    for run, old in before.items():
        new = json.loads((tmp_path / "runs" / run / "result.json").read_text())
        assert new["latency_ms_b1"] > 0 and new["latency_ms_b64"] > 0
        assert "latency_measured_at" in new
        assert not (tmp_path / "runs" / run / "model.onnx").exists()
        same = {k for k in old if not k.startswith("latency")}
        assert {k: new[k] for k in same} == {k: old[k] for k in same}


def test_table_filter_plans_only_those_tables(tmp_path):
    def table(name):
        return {"name": name, "models": ["resnet20"], "seeds": [0],
                "configs": [{"name": "prev", "connectivity": "fixed-prev"}]}
    spec = parse_spec({"tables": [table("a"), table("b")]})
    assert [p.run.label for p in plan(spec, tmp_path, tables=["b"])] == ["b/prev/resnet20-s0"]
    assert len(plan(spec, tmp_path)) == 2
    with pytest.raises(McGraphError, match="no table 'c'.*it has a, b"):
        plan(spec, tmp_path, tables=["c"])
