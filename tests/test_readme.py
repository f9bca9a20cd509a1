"""The README's commands and its Python example are the ones these tests run: each block is
read from README.md and run with tiny settings (the substitutions below), so the front door
never rots."""
import re
import shlex
from pathlib import Path

import pytest
from helpers import run_cli_ok

import mcgraph

README = Path(__file__).resolve().parents[1] / "README.md"
# tiny settings: the synthetic data set (1x16x16), one short epoch
TINY = [("fashion-mnist", "synthetic"), ("--epochs 2", "--epochs 1 --max-train-samples 128"),
        ("--input-size 28x28", "--input-size 16x16"),
        ("epochs=2", "epochs=1, max_train_samples=128")]


def _block(title: str, lang: str) -> str:
    text = README.read_text()
    section = text[text.index(title):]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no {lang} block under {title!r}"
    body = m.group(1)
    for a, b in TINY:
        body = body.replace(a, b)
    return body


def _photos(root: Path) -> None:
    """A tiny imagefolder for the README's `--data imagefolder:photos` line."""
    from PIL import Image
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            d = root / "photos" / split / cls
            d.mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (12, 12), (40 * k + i, 100, 200 - 30 * k)).save(d / f"{i}.png")


def test_the_readme_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path)
    (tmp_path / "path/to").mkdir(parents=True)
    (tmp_path / "path/to/net.py").write_text((README.parent / "examples/own_network/net.py")
                                             .read_text())
    commands = [c.strip() for line in _block("Your own network", "bash").splitlines()
                for c in line.split("&&") if c.strip() and not c.strip().startswith("#")]
    assert len(commands) >= 10
    for c in commands:
        argv = shlex.split(c.split("#")[0])
        assert argv[0] == "mcgraph", c
        if "imagefolder:photos" in argv:
            argv += ["--batch-size", "8", "--val-size", "4", "--no-progress"]
        elif argv[1] == "train":
            argv += ["--no-progress"]
        if argv[1] == "inspect":
            argv += ["--why-batches", "1"]
        run_cli_ok(*argv[1:])
    assert Path("model.onnx").is_file() and Path("model.int8.onnx").is_file()


def test_the_readme_python_example_trains_compiles_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _block("From Python", "python").replace('out="runs/r20"',
                                                  'out="runs/r20", progress=False')
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert Path("model.onnx").is_file() and Path("slim.onnx").is_file()
    meta = mcgraph.read_metadata("model.onnx")
    assert meta["dataset"] == "synthetic" and meta["params"] > 0


@pytest.mark.parametrize("path", ["docs/design.md", "docs/results.md", "docs/benchmarks.md",
                                  "docs/robustness.md", "docs/training.md",
                                  "docs/onnx-contract.md", "docs/models.md", "CHANGELOG.md"])
def test_the_readme_links_exist(path):
    assert f"]({path})" in README.read_text() and (README.parent / path).is_file()


def test_the_readme_reproduce_commands_name_tables_of_the_spec():
    from mcgraph.experiment.spec import load_spec
    block = _block("## Reproduce", "bash")
    tables = {t.name for t in load_spec(README.parent / "experiments/results.json").tables}
    named = [n for m in re.finditer(r"--table (\S+)", block) for n in m.group(1).split(",")]
    assert named and set(named) <= tables, set(named) - tables
