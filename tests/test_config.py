"""Configs validate themselves, speak Python; the CLI derives its options from them."""
import dataclasses

import click
import pytest

from mcgraph import McGraphError
from mcgraph.cli import cli_message, main
from mcgraph.config import CompileConfig, RewriteConfig, choices, default
from mcgraph.demo import DemoConfig
from mcgraph.train.config import TrainConfig


@pytest.mark.parametrize("kw,option", [({"freeze_at": 1.5}, "freeze_at"), ({"lr": -1.0}, "lr"),
                                       ({"epochs": 0}, "epochs"),
                                       ({"schedule": "linear"}, "schedule"),
                                       ({"connectivity": "dense"}, "connectivity"),
                                       ({"device": "tpu"}, "device"),
                                       ({"max_steps": 0}, "max_steps")])
def test_train_config_refuses_bad_values_naming_the_field(kw, option):
    with pytest.raises(McGraphError, match=rf"^train: {option} ") as e:
        TrainConfig(model="resnet20", **kw)
    assert e.value.option == option
    flag = "--" + option.replace("_", "-")
    assert cli_message(e.value).startswith(f"train: {flag} ")   # the CLI shows the flag


def test_other_configs_validate_too():
    with pytest.raises(McGraphError, match="rewrite: init must be one of"):
        RewriteConfig(model="resnet20", fan_in=1, out="x.pt", init="bogus")
    with pytest.raises(McGraphError, match="rewrite: fan_in .* must be >= 1"):
        RewriteConfig(model="resnet20", fan_in=0, out="x.pt")
    with pytest.raises(McGraphError, match="compile: opset must be >= 18"):
        CompileConfig(checkpoint="a.pt", out="a.onnx", opset=13)
    with pytest.raises(McGraphError, match="demo: epochs must be >= 1"):
        DemoConfig(epochs=0)


def test_cli_message_translates_only_whole_names():
    e = McGraphError("train", "loss is not finite; lower lr or mask_lr", ("lr", "mask_lr"))
    assert cli_message(e) == "train: loss is not finite; lower --lr or --mask-lr"
    e = McGraphError("train", "interrupted; continue with resume=True", "resume")
    assert cli_message(e) == "train: interrupted; continue with --resume"
    e = McGraphError("train", "device 'cuda' asked for, but no CUDA device is available", "device")
    assert cli_message(e) == "train: --device 'cuda' asked for, but no CUDA device is available"


@pytest.mark.parametrize("command,cls", [("train", TrainConfig), ("rewrite", RewriteConfig),
                                         ("compile", CompileConfig), ("demo", DemoConfig)])
def test_cli_defaults_and_choices_come_from_the_config(command, cls):
    cmd = main.commands[command]
    fields = {f.name for f in dataclasses.fields(cls)}
    checked = 0
    custom = {"modules", "input_size"} | ({"out"} if command == "train" else set()) | (
        {"fan_in", "out"} if command == "rewrite" else set())   # required unless only --explain
    for p in cmd.params:
        if p.name not in fields or p.name in custom or p.required:
            continue                 # parsed by the command itself (HxW, repeatable), or required
        assert p.default == default(cls, p.name), f"{command} --{p.name}"
        if isinstance(p.type, click.Choice):
            assert tuple(p.type.choices) == choices(cls, p.name)
        checked += 1
    assert checked >= (2 if command == "compile" else 4)
