"""rewrite --explain and inspect --explain: every visited module's verdict, the chain found or the
refusal, and the inputs left out; the refusal still ends in one line and exit 2."""
import json

from helpers import assert_one_line_error, run_cli, run_cli_ok


def test_rewrite_explain_alone_shows_the_verdicts_and_writes_nothing(tmp_path):
    r = run_cli_ok("rewrite", "resnet20", "--explain")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["module", "type", "verdict", "reason"]
    row = next(ln for ln in lines if ln.startswith("layer2.0 "))
    assert row.split()[:3] == ["layer2.0", "CifarBasicBlock", "block"]
    assert row.endswith("block: relu(F(x) + S(x)), S = getitem, pad")    # option A shortcut
    assert any(ln.startswith("layer2 ") and "chains residual blocks" in ln for ln in lines)
    assert lines[-1].startswith("9 blocks (module level): layer1.0, layer1.1")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_explain_json_and_with_out_also_rewrites(tmp_path):
    r = run_cli_ok("rewrite", "resnet20", "--explain", "--json")
    ex = json.loads(r.stdout)
    assert ex["error"] is None and len(ex["blocks"]) == 9 and ex["level"] == "module"
    assert {"module": "layer1", "type": "Sequential", "block": False} == {
        k: v for k, v in ex["verdicts"][0].items() if k != "reason"}
    out = tmp_path / "m.pt"
    r = run_cli_ok("rewrite", "resnet20", "-k", 2, "--explain", "-o", out)
    assert out.is_file()
    assert "9 blocks (module level)" in r.stdout and "mask_params" in r.stdout


def test_rewrite_explain_out_of_scope_network_shows_why_then_fails_in_one_line():
    r = run_cli("rewrite", "torchvision:mobilenet_v2", "--input-size", "32x32", "--explain")
    line = assert_one_line_error(r, "through features.4 (InvertedResidual)", stdout=None)
    assert line.startswith("error: rewrite: refused: find_modules: features.5 reads"), line
    assert any(ln.startswith("features.3 ") and " block " in ln for ln in r.stdout.splitlines())
    assert "features.4          InvertedResidual" in r.stdout                 # the transition


def test_rewrite_needs_fan_in_and_out_unless_explaining():
    assert_one_line_error(run_cli("rewrite", "resnet20", "-o", "x.pt"), "Missing option '--fan-in'")
    assert_one_line_error(run_cli("rewrite", "resnet20", "-k", 1), "Missing option '--out'")


def test_inspect_explain_and_json_carry_the_discovery(tmp_path):
    out = tmp_path / "m.pt"
    run_cli_ok("rewrite", "resnet18", "-k", 1, "--input-size", "40x40", "-o", out)
    r = run_cli_ok("inspect", out, "--explain")
    assert any(ln.startswith("layer4.1 ") and "BasicBlock" in ln and " block " in ln
               for ln in r.stdout.splitlines())
    d = json.loads(run_cli_ok("inspect", out, "--json").stdout)
    assert len(d["discovery"]["blocks"]) == 8
    assert d["discovery"]["verdicts"][0]["module"] == "layer1"
