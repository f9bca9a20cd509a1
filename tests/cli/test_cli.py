"""The CLI end to end, and every bad input ending in one line and a non-zero exit.

The checks are against what the commands claim, recomputed here from the checkpoint through the
public API (``mcgraph.load``, ``count_params``, ``create_model``, ``export_onnx``), not against
the numbers the commands print about themselves."""
import json
import subprocess
import sys

import onnx
import pytest
import torch
from helpers import RESNET20_BLOCKS as BLOCKS
from helpers import (
    adapter_convs,
    assert_one_line_error,
    assert_same_outputs,
    mask_values,
    model_convs,
    ort_logits,
    rand,
    resnet20_candidates,
    resnet20_chosen,
    resnet20_dead_blocks,
    run_cli,
    run_cli_ok,
)

import mcgraph

FAN_IN = 2


def onnx_ops(path):
    m = onnx.load(str(path))
    ops = {}
    for n in [*m.graph.node, *(n for f in m.functions for n in f.node)]:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def block_params(model, names):
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters())


def block_convs(model, names):
    return sum(isinstance(m, torch.nn.Conv2d)
               for n in names for m in model.get_submodule(n).modules())


@pytest.fixture(scope="module")
def masked_pt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    r = run_cli_ok("rewrite", "resnet20", "--in-channels", "1", "--input-size", "16x16",
                   "--fan-in", FAN_IN, "--init", "random", "-o", d / "m.pt", "--json")
    return d / "m.pt", json.loads(r.stdout)


@pytest.fixture(scope="module")
def expected(masked_pt):
    """What compiling the checkpoint must give, from its masks: top-K inputs, then the dead."""
    gm = mcgraph.load(masked_pt[0])
    values, cands = mask_values(gm), resnet20_candidates()
    chosen = resnet20_chosen(gm, FAN_IN)
    dead = resnet20_dead_blocks(chosen)
    assert dead, "the fixture's seed should leave unread blocks, or removal is not tested"
    return {"model": gm, "values": values, "candidates": cands, "chosen": chosen, "dead": dead}


def test_rewrite_writes_what_it_reports(masked_pt):
    path, summary = masked_pt
    gm = mcgraph.load(path)
    original = mcgraph.create_model("resnet20", in_channels=1)
    masks = [m for m in gm.modules() if isinstance(m, mcgraph.MaskConnect)]
    assert summary["modules"] == len(masks) == len(BLOCKS)
    assert [m.target for m in masks] == BLOCKS
    # block i chooses among the stem and the i blocks before it: 1 + 2 + ... + 9 mask values
    assert summary["candidate_edges"] == summary["mask_params"] == sum(range(1, 10)) \
        == mcgraph.count_params(gm, masks=True)
    # the rewrite adds masks, never weights
    assert summary["params"] == mcgraph.count_params(gm) == mcgraph.count_params(original)
    assert summary["input_shape"] == [1, 16, 16] and summary["fan_in"] == FAN_IN
    values = [v for vs in mask_values(gm).values() for v in vs]
    assert all(0 <= v <= 1 for v in values) and len(set(values)) > 1   # --init random, not uniform
    assert gm.eval()(rand(2, 1, 16, 16)).shape == (2, 10)


def test_compile_prints_verified_report(masked_pt, expected, tmp_path):
    path, summary = masked_pt
    r = run_cli_ok("compile", path, "-o", tmp_path / "m.onnx", "--report", tmp_path / "r.json")
    assert "verified: the fp32 ONNX export matches PyTorch in onnxruntime" in r.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    for key in ("params_before", "params_after", "modules_before", "modules_after", "removed",
                "max_abs_diff", "opset", "onnx_path"):
        assert key in rep
    assert rep["opset"] == 18 and rep["onnx_max_abs_diff"] < 1e-4 and rep["max_abs_diff"] < 1e-4
    assert rep["onnx_path"] == str(tmp_path / "m.onnx") and (tmp_path / "m.onnx").is_file()
    assert not list(tmp_path.glob(".*unverified*")), "staging file left behind"
    # removed: exactly the blocks no top-K mask reads; the module counts follow
    gm, dead = expected["model"], expected["dead"]
    assert rep["removed"] == dead
    assert rep["modules_before"] == len(BLOCKS)
    assert rep["modules_after"] == rep["modules_before"] - len(rep["removed"])
    # parameters: the checkpoint's weights, minus exactly those of the removed blocks
    assert rep["params_before"] == summary["params"] == mcgraph.count_params(gm)
    assert rep["mask_params"] == summary["mask_params"]
    assert rep["params_after"] == rep["params_before"] - block_params(gm, dead)
    assert rep["params_after"] < rep["params_before"]
    # ONNX: one Conv per conv of the remaining network, one Gemm (the head)
    ops = onnx_ops(tmp_path / "m.onnx")
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in gm.modules())
    assert model_convs(tmp_path / "m.onnx") == n_convs - block_convs(gm, dead) < n_convs
    assert ops["Gemm"] == 1
    assert rep["onnx_ops"] == ops
    # onnxruntime gives the checkpoint's own (eval-mode, top-K) logits on a fresh batch
    x = rand(3, 1, 16, 16, seed=7)
    with torch.no_grad():
        ref = mcgraph.load(path).eval()(x)
    assert_same_outputs(ref, ort_logits(tmp_path / "m.onnx", x))


def test_compile_json(masked_pt, expected, tmp_path):
    path, _ = masked_pt
    r = run_cli_ok("compile", path, "-o", tmp_path / "m.onnx", "--json", "--no-verify")
    rep = json.loads(r.stdout)                       # stdout is the JSON and nothing else
    assert rep["onnx_max_abs_diff"] is None and rep["opset"] == 18
    gm, dead = expected["model"], expected["dead"]
    assert rep["removed"] == dead
    assert rep["modules_after"] == rep["modules_before"] - len(rep["removed"]) == 9 - len(dead)
    assert rep["params_after"] == mcgraph.count_params(gm) - block_params(gm, dead)
    ops = onnx_ops(tmp_path / "m.onnx")
    assert rep["onnx_ops"] == ops and model_convs(tmp_path / "m.onnx") == 19 - block_convs(gm, dead)
    x = rand(2, 1, 16, 16, seed=3)
    with torch.no_grad():
        ref = gm.eval()(x)
    assert_same_outputs(ref, ort_logits(tmp_path / "m.onnx", x))   # unverified, but still right


def test_inspect(masked_pt, expected):
    path, _ = masked_pt
    r = run_cli_ok("inspect", path)
    lines = r.stdout.splitlines()
    for b in BLOCKS:
        row = next(ln for ln in lines if ln.startswith(b + " "))
        assert ", ".join(expected["chosen"][b]) in row, row
    assert lines[-1] == f"dead after freeze: {', '.join(expected['dead'])}"
    r = run_cli_ok("inspect", path, "--json")
    data = json.loads(r.stdout)
    assert [m["module"] for m in data["modules"]] == BLOCKS
    for m in data["modules"]:
        b = m["module"]
        assert m["candidates"] == expected["candidates"][b]
        assert m["values"] == pytest.approx(expected["values"][b])
        assert m["chosen"] == expected["chosen"][b]
        assert len(m["chosen"]) == min(FAN_IN, len(m["candidates"])) and m["frozen"] is False
    assert data["dead"] == expected["dead"]


@pytest.mark.parametrize("args,reason", [
    (["rewrite", "resnet21", "--fan-in", "1", "-o", "x.pt"], "unknown model 'resnet21'"),
    (["rewrite", "resnet20", "--fan-in", "0", "-o", "x.pt"], ("fan", "must be >= 1", "got 0")),
    (["rewrite", "resnet20", "--fan-in", "12", "-o", "x.pt"],
     ("K=12", "larger than the candidates")),
    (["rewrite", "resnet20", "--fan-in", "1", "--modules", "NoSuchBlock", "-o", "x.pt"],
     ("no residual blocks found", "NoSuchBlock")),
    (["rewrite", "resnet20", "--fan-in", "1", "-o", "missing/x.pt"],
     ("output directory missing", "does not exist")),
    (["rewrite", "resnet20", "--fan-in", "1", "--input-size", "abc", "-o", "x.pt"],
     ("expected HxW", "'abc'")),
    (["compile", "notes.txt", "-o", "m.onnx"], ("notes.txt", "not an mcgraph checkpoint")),
    (["compile", "nothere.pt", "-o", "m.onnx"], ("nothere.pt", "does not exist")),
    (["inspect", "notes.txt"], ("notes.txt", "not an mcgraph checkpoint")),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, monkeypatch, args, reason):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(run_cli(*args), reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]   # nothing written


def test_compile_to_missing_directory(masked_pt, tmp_path):
    out = tmp_path / "no" / "m.onnx"
    assert_one_line_error(run_cli("compile", masked_pt[0], "-o", out),
                          (f"output directory {out.parent}", "does not exist"))
    assert not out.parent.exists()


def test_python_dash_m_works(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mcgraph", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("Commands:")[1].split()
    for cmd in ("bench", "compile", "demo", "eval", "inspect", "rewrite", "train"):
        assert cmd in listed, r.stdout
    # a real process (CliRunner hides tracebacks): a bad file is one stderr line, exit code 2
    (tmp_path / "notes.txt").write_text("hello")
    r = subprocess.run([sys.executable, "-m", "mcgraph", "inspect", str(tmp_path / "notes.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith("error: ") and str(tmp_path / "notes.txt") in line, r.stderr
    assert "not an mcgraph checkpoint" in line


def test_bench_prints_latency_side_by_side(masked_pt, expected, tmp_path):
    run_cli_ok("compile", masked_pt[0], "-o", tmp_path / "m.onnx", "--no-verify", "--json")
    original = mcgraph.create_model("resnet20", in_channels=1).eval()
    mcgraph.export_onnx(original, tmp_path / "orig.onnx", (1, 16, 16))
    r = run_cli_ok("bench", tmp_path / "m.onnx", tmp_path / "orig.onnx", "--batch-sizes", "1,2",
                   "--repeats", "3", "--json")
    slim, full = json.loads(r.stdout)
    assert slim["model"] == str(tmp_path / "m.onnx")
    assert full["model"] == str(tmp_path / "orig.onnx")
    assert slim["conv_nodes"] == onnx_ops(tmp_path / "m.onnx")["Conv"]
    assert full["conv_nodes"] == onnx_ops(tmp_path / "orig.onnx")["Conv"] == 19
    adapters, scales = adapter_convs(tmp_path / "m.onnx")       # conv_adapters' 1x1 convs
    assert slim["conv_nodes"] - len(adapters) - len(scales) == 19 - block_convs(expected["model"],
                                                                               expected["dead"])
    assert 0 < slim["params"] < full["params"]              # the removed blocks' weights are gone
    for res in (slim, full):
        assert set(res["latency_ms"]) == {"1", "2"}
        assert all(v > 0 for v in res["latency_ms"].values())


def test_bench_baseline_ratios_agree_with_its_own_timings(masked_pt, tmp_path):
    run_cli_ok("compile", masked_pt[0], "-o", tmp_path / "m.onnx", "--no-verify", "--json")
    original = mcgraph.create_model("resnet20", in_channels=1).eval()
    mcgraph.export_onnx(original, tmp_path / "orig.onnx", (1, 16, 16))
    r = run_cli_ok("bench", tmp_path / "m.onnx", "--baseline", tmp_path / "orig.onnx",
                   "--batch-sizes", "1,3", "--repeats", "4", "--warmup", "1", "--threads", "1",
                   "--json")
    base, slim = json.loads(r.stdout)
    assert base["baseline"] and not slim["baseline"] and "vs_baseline" not in base
    assert base["macs"] == mcgraph.deploy.onnx_macs(tmp_path / "orig.onnx") > slim["macs"] > 0
    for b in ("1", "3"):
        for e in (base, slim):
            assert 0 < e["latency_ms"][b] <= e["p90_ms"][b]
            assert e["throughput"][b] == pytest.approx(int(b) / (e["latency_ms"][b] / 1e3))
        ratio = slim["vs_baseline"][b]
        assert ratio["latency"] == pytest.approx(slim["latency_ms"][b] / base["latency_ms"][b])
        assert ratio["macs"] == pytest.approx(slim["macs"] / base["macs"])
        assert ratio["latency_per_mac"] == pytest.approx(ratio["latency"] / ratio["macs"])
    assert slim["threads"] == 1 and slim["repeats"] == 4
    text = run_cli_ok("bench", tmp_path / "m.onnx", "--baseline", tmp_path / "orig.onnx",
                      "--batch-sizes", "2", "--repeats", "2").stdout
    assert "(baseline)" in text and "MAC ratio" in text and "interleaved" in text

