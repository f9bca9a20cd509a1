"""The CLI end to end, and every bad input ending in one line and a non-zero exit."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mcgraph.cli import main


def _run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def masked_pt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    code, out = _run("rewrite", "resnet20", "--in-channels", "1", "--input-size", "16x16",
                     "--fan-in", "2", "--init", "random", "-o", d / "m.pt", "--json")
    assert code == 0, out
    assert json.loads(out)["modules"] == 9
    return d / "m.pt"


def test_compile_prints_verified_report(masked_pt, tmp_path):
    code, out = _run("compile", masked_pt, "-o", tmp_path / "m.onnx", "--report", tmp_path / "r.json")
    assert code == 0, out
    assert "verified: onnxruntime matches PyTorch" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    for key in ("params_before", "params_after", "modules_before", "modules_after", "removed",
                "max_abs_diff", "opset", "onnx_path"):
        assert key in rep
    assert rep["opset"] >= 18 and rep["onnx_max_abs_diff"] < 1e-4 and (tmp_path / "m.onnx").is_file()
    assert rep["params_after"] < rep["params_before"] or not rep["removed"]


def test_compile_json(masked_pt, tmp_path):
    code, out = _run("compile", masked_pt, "-o", tmp_path / "m.onnx", "--json", "--no-verify")
    assert code == 0 and json.loads(out)["onnx_max_abs_diff"] is None


def test_inspect(masked_pt):
    code, out = _run("inspect", masked_pt)
    assert code == 0 and "layer3.2" in out and "dead after freeze" in out
    code, out = _run("inspect", masked_pt, "--json")
    data = json.loads(out)
    assert code == 0 and len(data["modules"]) == 9
    assert all(len(m["chosen"]) == min(2, len(m["candidates"])) for m in data["modules"])


@pytest.mark.parametrize("args,reason", [
    (["rewrite", "resnet21", "--fan-in", "1", "-o", "x.pt"], "unknown model 'resnet21'"),
    (["rewrite", "resnet20", "--fan-in", "0", "-o", "x.pt"], "fan-in K must be >= 1"),
    (["rewrite", "resnet20", "--fan-in", "12", "-o", "x.pt"], "larger than the candidates"),
    (["rewrite", "resnet20", "--fan-in", "1", "--modules", "NoSuchBlock", "-o", "x.pt"],
     "no residual blocks found"),
    (["rewrite", "resnet20", "--fan-in", "1", "-o", "missing/x.pt"], "output directory missing"),
    (["rewrite", "resnet20", "--fan-in", "1", "--input-size", "abc", "-o", "x.pt"], "expected HxW"),
    (["compile", "notes.txt", "-o", "m.onnx"], "not an mcgraph checkpoint"),
    (["compile", "nothere.pt", "-o", "m.onnx"], "does not exist"),
    (["inspect", "notes.txt"], "not an mcgraph checkpoint"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, monkeypatch, args, reason):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    code, out = _run(*args)
    assert code != 0
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert reason in lines[-1], out
    assert "Traceback" not in out


def test_compile_to_missing_directory(masked_pt, tmp_path):
    code, out = _run("compile", masked_pt, "-o", tmp_path / "no" / "m.onnx")
    assert code != 0 and "output directory" in out


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "mcgraph", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "rewrite" in r.stdout and "compile" in r.stdout


def test_bench_prints_latency_side_by_side(masked_pt, tmp_path):
    code, out = _run("compile", masked_pt, "-o", tmp_path / "m.onnx", "--no-verify", "--json")
    assert code == 0, out
    code, out = _run("bench", tmp_path / "m.onnx", "--batch-sizes", "1,2", "--repeats", "3", "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res[0]["conv_nodes"] > 0 and set(res[0]["latency_ms"]) == {"1", "2"}
    assert all(v > 0 for v in res[0]["latency_ms"].values())
