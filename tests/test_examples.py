"""The scripts under examples/ run as a user would run them (a fresh process, another working
directory, tiny settings) and print what they promise.

The CLI examples find ``mcgraph`` and ``torchrun`` on PATH: the folder of this interpreter (the
virtualenv's bin/) is put first. About 90 s of CPU time in all; own_network's run feeds deploy."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(cmd, cwd, env=None, timeout=300):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**ENV, **(env or {})}, text=True,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _python(script, *args, cwd, **kw):
    return _run([sys.executable, EXAMPLES / script, *args], cwd, **kw)


def test_rewrite_resnet50(tmp_path):
    out = _python("rewrite_resnet50.py", "--tiny", "--out", "out", cwd=tmp_path)
    assert "16 blocks; each reads 1 of its candidates" in out, out
    assert re.search(r"layer4\.2 +reads \S+ +\(16 candidates\)", out), out
    diff = float(re.search(r"max \|onnxruntime - pytorch\| = (\S+)", out).group(1))
    assert diff < 1e-4, out
    before, after = (int(s.replace(",", "")) for s in
                     re.search(r"parameters: ([\d,]+) -> ([\d,]+)", out).groups())
    assert before == 23_528_522 and after < before, out   # ResNet-50 with a 10-class head
    kept = int(re.search(r"blocks: 16 -> (\d+)", out).group(1))
    assert 1 <= kept < 16 and (tmp_path / "out" / "resnet50.onnx").is_file()


def test_learn_own_data(tmp_path):
    import onnxruntime as ort
    out = _python("learn_own_data.py", "--tiny", "--model", "resnet8", "--out", "out",
                  cwd=tmp_path)
    for rule in ("learned", "fixed-prev"):
        assert re.search(rf"^{rule} +test acc +[\d.]+%  compiled params [\d,]+  blocks \d/3$",
                         out, re.M), out
        assert (tmp_path / "out" / rule / "best.pt").is_file()
    assert re.search(r"^fixed-prev .* blocks 3/3$", out, re.M), out   # the original: every block
    assert re.search(r"custom loop: step 1, test acc \d+% \(top-K wiring\); freezing", out), out
    assert re.search(r"custom loop: 6 steps, test acc \d+%, compiled params [\d,]+$", out,
                     re.M), out
    # the tensors' class names and measured normalization went into the file
    sess = ort.InferenceSession(str(tmp_path / "out" / "learned.onnx"),
                                providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mcgraph.class_names"]) == ["disc", "square", "cross"]
    assert meta["mcgraph.dataset"] == "tensors" and len(json.loads(meta["mcgraph.mean"])) == 1


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    """examples/own_network/run.sh at one epoch on synthetic data: its output folder, stdout."""
    tmp = tmp_path_factory.mktemp("own_network")
    out = _run(["bash", EXAMPLES / "own_network" / "run.sh"], tmp,
               env={"OUT": "out", "EPOCHS": "1"})
    return tmp / "out", out


def test_own_network(own_network):
    folder, out = own_network
    assert "6 blocks (module level): blocks.0, blocks.1, blocks.2, blocks.3, blocks.4" in out, out
    assert re.search(r"blocks\.2 +Residual +block +block: relu\(F\(x\) \+ S\(x\)\), S = conv2d",
                     out), out
    assert re.search(r"^best +\S+best\.pt$", out, re.M), out        # train
    assert re.search(r"^blocks\.5 +6 +\S+", out, re.M), out          # inspect's table
    assert "verified: the fp32 ONNX export matches PyTorch in onnxruntime" in out, out
    assert re.search(r"^runtime +onnxruntime$", out, re.M) and \
        re.search(r"^acc +[\d.]+$", out, re.M), out                # eval of the ONNX file
    assert (folder / "masked.pt").is_file() and (folder / "model.onnx").is_file()


def test_deploy(own_network, tmp_path):
    """deploy.py on the file run.sh compiled (trained by `mcgraph train --data synthetic`, then
    `mcgraph compile`), in a process where importing torch fails."""
    import onnxruntime as ort
    from PIL import Image

    from mcgraph.train.data import load_data
    data = load_data("synthetic")
    images = data.test.images[:40, 0].numpy()
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
    model = own_network[0] / "model.onnx"
    no_torch = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = _run([sys.executable, "-c", no_torch, EXAMPLES / "deploy.py", model, tmp_path,
                "--batch-size", "16", "--device", "cpu"], tmp_path)
    assert "1x16x16 input, 10 classes, CPUExecutionProvider" in out, out
    got = re.findall(r"^(\d\d)\.png: class (\d) \(\d+%\)$", out, re.M)
    assert len(got) == 40, out
    # the same predictions as the file fed the way mcgraph's loader feeds it
    mean, std = data.spec.mean[0], data.spec.std[0]
    x = ((images[:, None].astype(np.float32) / 255 - mean) / std).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = sess.run(["logits"], {"input": x})[0].argmax(1)
    assert [int(k) for _, k in got] == want.tolist()


def test_torchrun_ddp(tmp_path):
    r = subprocess.run(["bash", EXAMPLES / "torchrun_ddp.sh"], cwd=tmp_path, text=True,
                       capture_output=True, timeout=300,
                       env={**ENV, "EPOCHS": "1", "OUT": "ddp", "BATCH": "32"})
    ranks = [ln for ln in r.stderr.splitlines() if ln.startswith("[rank") and "Warn" not in ln]
    assert r.returncode == 0, "\n".join(ranks)[-3000:] or r.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    # 461 synthetic images after validation over 2 ranks at 32 each: 7 steps
    assert (cfg["world_size"], cfg["steps_per_epoch"], cfg["device"]) == (2, 7, "cpu"), cfg
    assert len(re.findall(r"^epochs_done +1$", r.stdout, re.M)) == 2, r.stdout   # both ranks
    assert (tmp_path / "ddp" / "best.pt").is_file()
