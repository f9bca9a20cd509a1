"""The demo's comparison with the shipped Fixed-Prev runs of the same budget."""
import json

from mcgraph.demo import BASELINE, DemoConfig, committed_baseline
from mcgraph.device import cpu_model

BUDGET = {"model": "resnet20", "data": "fashion-mnist", "epochs": 2, "batch_size": 128, "lr": 0.1,
          "max_train_samples": None, "val_size": None, "augment": False}


def _baseline(tmp_path, runs):
    """A shipped baseline file, as the experiment renderer writes it."""
    path = tmp_path / "demo_baseline.json"
    path.write_text(json.dumps({"table": "demo", "runs": [
        {"config": "fixed-prev", "model": "resnet20", "seed": i, "test_acc": acc,
         "processor": cpu, "recipe": {**BUDGET, **over}}
        for i, (acc, cpu, over) in enumerate(runs)]}))
    return path


def test_baseline_reads_only_runs_of_the_same_budget(tmp_path):
    here = cpu_model()
    path = _baseline(tmp_path, [(83.0, here, {}), (84.0, here, {}),
                                (99.0, here, {"epochs": 10}),        # another budget
                                (99.0, here, {"augment": True})])    # augmented: another too
    b = committed_baseline(DemoConfig(), acc=82.0, path=path)
    assert b["found"] and b["seeds"] == 2 and b["comparable"]
    assert b["test_acc_mean"] == 83.5 and abs(b["test_acc_std"] - 0.7071) < 1e-3
    assert b["gain_points"] == -1.5


def test_runs_of_another_cpu_are_shown_as_not_comparable(tmp_path):
    path = _baseline(tmp_path, [(83.0, "Some Other CPU", {}), (84.0, cpu_model(), {})])
    b = committed_baseline(DemoConfig(), acc=82.0, path=path)
    assert b["found"] and not b["comparable"] and "Some Other CPU" in b["trained_on"]
    from mcgraph.cli.demo_cmd import baseline_line
    line = baseline_line({"baseline": b, "model": "resnet20"})
    assert "not comparable" in line and "lost" not in line and "gained" not in line


def test_no_baseline_for_another_budget_says_why(tmp_path):
    path = _baseline(tmp_path, [(83.0, cpu_model(), {})])
    b = committed_baseline(DemoConfig(epochs=5), acc=82.0, path=path)
    assert not b["found"] and "budget" in b["why"]
    assert not committed_baseline(DemoConfig(), 1.0, path=tmp_path / "missing.json")["found"]


def test_the_package_ships_the_demo_budget():
    """Written by `mcgraph experiment --render` from the committed demo table."""
    b = committed_baseline(DemoConfig(), acc=0.0)
    assert BASELINE.is_file() and b["found"] and b["seeds"] >= 2, b
