"""The results page: numbers recomputed from hand-written run files, verdicts, copies, re-render."""
import json
import statistics

import pytest
from helpers import assert_one_line_error, run_cli, run_cli_ok

from mcgraph.experiment import parse_spec, render
from mcgraph.experiment.render import Group, RunData, best_run, compare

SPEC = {"tables": [{
    "name": "t1", "title": "Table 1 shape", "models": ["resnet20"], "seeds": [0, 1, 2],
    "recipe": {"data": "synthetic", "epochs": 2, "val_size": 50},
    "configs": [{"name": "learned", "connectivity": "learned", "fan_in": 1},
                {"name": "prev", "connectivity": "fixed-prev", "fan_in": 1}],
    "compare": [["learned", "prev"]], "notes": "a note under the table"}]}
# (config, seed) -> (val per epoch, test per epoch); prev seed 2 stopped after one epoch
CURVES = {("learned", 0): ([80, 85], [81, 84]), ("learned", 1): ([82, 86], [83, 86]),
          ("learned", 2): ([90, 88], [89, 87]),
          ("prev", 0): ([70, 75], [71, 76]), ("prev", 1): ([72, 74], [73, 72]),
          ("prev", 2): ([60], [61])}


def _write_run(root, config, seed, val, test, done=True):
    d = root / "t1" / config / f"resnet20-s{seed}"
    d.mkdir(parents=True)
    rows = [{"epoch": e + 1, "step": 4 * (e + 1), "val_acc": float(v), "test_acc": float(t),
             "seconds": 10.0} for e, (v, t) in enumerate(zip(val, test))]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.json").write_text(json.dumps({"connectivity": config, "fan_in": 1}))
    if not done:
        return
    best = max(rows, key=lambda r: r["val_acc"])
    kept = 5 + seed if config == "learned" else 9
    (d / "result.json").write_text(json.dumps({
        "table": "t1", "config": config, "model": "resnet20", "seed": seed, "status": "done",
        "best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "test_acc": best["test_acc"],
        "final_test_acc": rows[-1]["test_acc"],
        "params_train": 270_000 if config == "learned" else 269_434,
        "params_test": 100_000 + 10_000 * seed if config == "learned" else 269_434,
        "blocks_total": 9, "blocks_kept": kept, "latency_ms_b1": 0.2 + seed / 10,
        "latency_ms_b64": 8.0 + seed, "train_seconds": 10.0 * len(rows), "epochs": len(rows),
        "machine": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "torch": "2.x",
                    "device": "cpu"}}))
    (d / "connectivity.png").write_bytes(b"png of " + f"{config} {seed}".encode())


@pytest.fixture
def page(tmp_path):
    root = tmp_path / "runs"
    for (config, seed), (val, test) in CURVES.items():
        _write_run(root, config, seed, val, test, done=(config, seed) != ("prev", 2))
    spec = parse_spec(SPEC)
    md = render(spec, root, tmp_path / "docs" / "results.md")
    return tmp_path, spec, md


def _rows(md):
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("|")]
    heads = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])
    return {r[0]: dict(zip(heads, r)) for r in cells if len(r) == len(heads)}


def _test_accs(config, seeds):
    """Recomputed from CURVES: the test accuracy of the first best validation epoch."""
    out = []
    for s in seeds:
        val, test = CURVES[(config, s)]
        out.append(float(test[val.index(max(val))]))
    return out


def test_table_numbers(page):
    _, _, md = page
    rows = _rows(md)
    learned, prev = _test_accs("learned", [0, 1, 2]), _test_accs("prev", [0, 1])
    assert learned == [84.0, 86.0, 89.0] and prev == [76.0, 72.0]
    r = rows["learned"]
    assert r["connectivity"] == "learned" and r["K"] == "1" and r["seeds done"] == "3/3"
    assert r["test acc, best seed"] == "89.00"
    assert r["test acc, mean ± std"] == (f"{statistics.fmean(learned):.2f} ± "
                                        f"{statistics.stdev(learned):.2f}")
    assert r["val acc, mean"] == f"{statistics.fmean([85, 86, 90]):.2f}"
    assert r["params, train"] == "270,000" and r["params, test"] == "110,000"
    assert r["blocks kept"] == "6.0/9"
    assert r["ORT b1 ms"] == "0.300" and r["ORT b64 ms"] == "9.00"
    p = rows["prev"]
    assert p["seeds done"] == "2/3"             # the stopped seed counts as missing
    assert p["test acc, mean ± std"] == (f"{statistics.fmean(prev):.2f} ± "
                                        f"{statistics.stdev(prev):.2f}")
    assert p["params, test"] == "269,434" and p["blocks kept"] == "9.0/9"


def test_comparison_verdict_and_paired(page):
    _, _, md = page
    text = md.read_text()
    # 86.33 - 74.00 = +12.33; 2 seeds on one side: the larger range (learned: 5.00) is the spread
    assert "learned − prev: +12.33; seed spread 5.00 (larger range over seeds; 3 vs 2 seeds) " \
           "→ **learned better**" in text
    assert "paired per seed" not in text        # the seeds differ (prev s2 is not done)
    assert "a note under the table" in text


def test_compare_rules():
    def group(name, accs, seeds=None):
        seeds = seeds or list(range(len(accs)))
        return Group(name, "m", [RunData(name, "m", s, None, {"test_acc": a, "best_val_acc": None})
                                 for s, a in zip(seeds, accs)])
    c = compare(group("a", [80.0, 81.0, 82.0]), group("b", [79.0, 80.0, 81.5]))
    assert c["spread_kind"] == "larger sample std" and c["verdict"] == "within seed spread"
    assert c["paired"] == {0: 1.0, 1: 1.0, 2: 0.5}
    c = compare(group("a", [70.0, 71.0, 72.0]), group("b", [80.0, 80.5, 81.0]))
    assert c["verdict"] == "b better"
    assert compare(group("a", [1.0]), group("b", [])) is None
    one = compare(group("a", [80.0]), group("b", [79.0]))
    assert one["spread"] == 0.0 and "no spread measured" in one["spread_kind"]


def test_best_run_by_validation_ties_lowest_seed():
    runs = [RunData("a", "m", s, None, {"test_acc": t, "best_val_acc": v})
            for s, v, t in ((0, 80.0, 70.0), (1, 90.0, 60.0), (2, 90.0, 99.0))]
    assert best_run(Group("a", "m", runs)).seed == 1


def test_pictures_copies_and_rerender(page):
    tmp, spec, md = page
    assets = tmp / "docs" / "results"
    text = md.read_text()
    for name in ("t1_curves.png", "t1_acc_vs_params.png", "t1_acc_vs_latency.png"):
        assert (assets / name).read_bytes()[:4] == b"\x89PNG" and f"](results/{name})" in text
    # learned's best run by validation is seed 2 (val 90), prev's is seed 0 (val 75)
    assert (assets / "t1_learned_connectivity.png").read_bytes() == b"png of learned 2"
    assert (assets / "t1_prev_connectivity.png").read_bytes() == b"png of prev 0"
    copied = assets / "runs" / "t1" / "prev" / "resnet20-s2"
    assert sorted(p.name for p in copied.iterdir()) == ["config.json", "metrics.jsonl"]
    assert not list((assets / "runs").rglob("*.png"))
    # the copied folder alone re-renders the same page (the pictures stay from the first render)
    assert render(spec, assets / "runs", md) == md and md.read_text() == text


def test_missing_runs_render(tmp_path):
    spec = parse_spec(SPEC)
    md = render(spec, tmp_path / "nothing", tmp_path / "r.md")
    rows = _rows(md)
    assert rows["learned"]["seeds done"] == "0/3" and rows["learned"]["test acc, mean ± std"] == "—"
    assert "learned − prev: — (runs missing)" in md.read_text()


def test_budget(page):
    _, _, md = page
    text = md.read_text()
    assert "data synthetic; epochs 2" in text and "val_size 50" in text
    assert "training wall time: 100 s" in text           # 5 finished runs x 2 epochs x 10 s
    assert "Linux, x86_64, 2 CPUs, torch 2.x" in text


def test_cli_render_only(page):
    tmp, _, md = page
    (tmp / "spec.json").write_text(json.dumps(SPEC))
    before = md.read_text()
    run_cli_ok("experiment", tmp / "spec.json", "--render-only",
               "--out", tmp / "docs" / "results" / "runs", "--render", md)
    assert md.read_text() == before
    assert_one_line_error(run_cli("experiment", tmp / "spec.json", "--render-only"),
                          "--render-only needs --render")
