"""The demo's comparison with the committed Fixed-Prev runs of the same budget."""
import json

from mcgraph.demo import DemoConfig, committed_baseline


def _run(root, seed, acc, **config):
    d = root / "fixed-prev" / f"resnet20-s{seed}"
    d.mkdir(parents=True)
    base = {"model": "resnet20", "data": "fashion-mnist", "epochs": 2, "batch_size": 128, "lr": 0.1,
            "max_train_samples": None, "val_size": None, "augment": False}
    (d / "config.json").write_text(json.dumps({**base, **config}))
    (d / "result.json").write_text(json.dumps({"test_acc": acc}))


def test_baseline_reads_only_runs_of_the_same_budget(tmp_path):
    _run(tmp_path, 0, 83.0)
    _run(tmp_path, 1, 84.0)
    _run(tmp_path, 2, 99.0, epochs=10)                      # another budget: not comparable
    _run(tmp_path, 3, 99.0, augment=True)                   # augmented: not comparable either
    b = committed_baseline(DemoConfig(results=str(tmp_path)), acc=82.0)
    assert b["found"] and b["seeds"] == 2
    assert b["test_acc_mean"] == 83.5 and abs(b["test_acc_std"] - 0.7071) < 1e-3
    assert b["gain_points"] == -1.5


def test_no_baseline_for_another_budget_says_why(tmp_path):
    _run(tmp_path, 0, 83.0)
    b = committed_baseline(DemoConfig(results=str(tmp_path), epochs=5), acc=82.0)
    assert not b["found"] and "budget" in b["why"]
    d = tmp_path / "fixed-prev" / "resnet20-s0" / "config.json"    # written before 'augment'
    d.write_text(d.read_text().replace(', "augment": false', ""))
    assert not committed_baseline(DemoConfig(results=str(tmp_path)), acc=82.0)["found"]


def test_the_committed_results_hold_the_demo_budget():
    b = committed_baseline(DemoConfig(), acc=0.0)
    assert b["found"] and b["seeds"] >= 2, b
