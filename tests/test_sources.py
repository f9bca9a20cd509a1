"""Model sources (mcgraph.sources): registered names, torchvision:NAME, timm:NAME, a file's or a
module's factory; --model-arg values; generic stem/head adaptation; what a checkpoint records and
the trust its rebuilding needs."""
import sys
import textwrap

import pytest
import torch
from helpers import assert_same_outputs, eval_outputs, rand
from torch import nn

import mcgraph
from mcgraph import McGraphError, graph_meta
from mcgraph.sources import (
    ModelSource,
    adapt_io,
    build_model,
    io_channels,
    parse_model_args,
    parse_source,
    same_source,
)

# A small residual network built from torchvision's BasicBlock, its factory taking arguments.
NET = textwrap.dedent('''
    import torch
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    class SmallNet(nn.Module):
        def __init__(self, width, blocks, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU())
            self.layer = nn.Sequential(*[BasicBlock(width, width) for _ in range(blocks)])
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(width, 16), nn.ReLU(),
                                      nn.Linear(16, num_classes))

        def forward(self, x):
            return self.head(self.pool(self.layer(self.stem(x))))

    def make(width=8, blocks=3, num_classes=10):
        return SmallNet(width, blocks, num_classes)

    def broken(width=8):
        raise ValueError(f"width {width} is odd\\nsecond line")

    def not_a_model():
        return 42

    HELPER_CONSTANT = 3
''')


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def test_parse_source_each_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = parse_source("resnet20")
    assert (r.kind, r.spec, r.name, r.factory, r.args, r.trusted) == \
        ("registry", "resnet20", "resnet20", None, {}, True)
    t = parse_source("torchvision:resnet18", {"zero_init_residual": True})
    assert (t.kind, t.name, t.spec, t.args, t.trusted) == \
        ("torchvision", "resnet18", "torchvision:resnet18", {"zero_init_residual": True}, True)
    src = parse_source("timm:resnet18")
    assert (src.kind, src.trusted) == ("timm", True)
    f = parse_source("sub/net.py:make", {"width": 8})
    assert f.kind == "file" and not f.trusted and f.factory == "make"
    assert f.name == str(tmp_path / "sub" / "net.py")            # recorded absolute
    assert f.spec == f"{tmp_path / 'sub' / 'net.py'}:make" and f.args == {"width": 8}
    m = parse_source("pkg.models:build")
    assert (m.kind, m.name, m.factory, m.spec, m.trusted) == ("module", "pkg.models", "build",
                                                               "pkg.models:build", False)
    assert same_source("sub/net.py:make", f.spec) and not same_source("resnet20", f.spec)
    assert not same_source("runs/x/last.pt", f.spec)


@pytest.mark.parametrize("spec,reason", [
    ("resnet21", "unknown model 'resnet21'"),            # the registry's own message
    ("net.py", "names its factory"),
    ("net.py:", "not a factory name"),
    ("torchvision:", "names no torchvision model"),
    ("a b:make", "is not a model source"),
])
def test_parse_source_refuses(spec, reason):
    with pytest.raises(McGraphError, match=reason):
        parse_source(spec)


def test_parse_model_args():
    assert parse_model_args(["depth=20", "widths=(16,32)", "act=relu", "p=0.5", "flag=True",
                             "name='x'", "empty=", "expr=1+", "eq=a=b"]) == {
        "depth": 20, "widths": (16, 32), "act": "relu", "p": 0.5, "flag": True, "name": "x",
        "empty": "", "expr": "1+", "eq": "a=b"}
    assert parse_model_args([]) == {}
    for bad in ("depth", "=3", "1x=2", "a-b=1"):
        with pytest.raises(McGraphError, match="key=value"):
            parse_model_args([bad])
    with pytest.raises(McGraphError, match="values must be"):
        parse_model_args(["s={1, 2}"])                   # a set: not recordable in a checkpoint


def test_torchvision_source_adapts_stem_and_head():
    src = parse_source("torchvision:resnet18")
    model, size = build_model(src, num_classes=7, in_channels=1)
    assert size == (224, 224)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert (model.conv1.out_channels, model.conv1.kernel_size, model.conv1.stride,
            model.conv1.padding) == (64, (7, 7), (2, 2), (3, 3))
    assert io_channels(model) == (1, 7)
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    own, _ = build_model(src)                                  # nothing asked: torchvision's own
    assert io_channels(own) == (3, 1000)
    # a convolutional head (no nn.Linear): num_classes reaches the constructor, nothing to adapt
    sq, _ = build_model(parse_source("torchvision:squeezenet1_0"), num_classes=7, in_channels=1)
    assert io_channels(sq) == (1, None) and sq.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 7)


def test_unknown_torchvision_name_suggests_close_ones():
    with pytest.raises(McGraphError,
                       match=r"unknown torchvision .*'resnet19'.*did you mean.*resnet18"):
        build_model(parse_source("torchvision:resnet19"))
    with pytest.raises(McGraphError, match="'maskrcnn_resnet50_fpn'"):   # detection: not offered
        build_model(parse_source("torchvision:maskrcnn_resnet50_fpn"))


def test_registry_defaults_unchanged():
    model, size = build_model(parse_source("resnet20"))
    assert size == (32, 32) and io_channels(model) == (3, 10)
    model, _ = build_model(parse_source("resnet20"), num_classes=4, in_channels=1)
    assert io_channels(model) == (1, 4)
    with pytest.raises(McGraphError, match="does not take"):
        build_model(parse_source("resnet20", {"width": 8}))


def test_file_source_builds_with_args_and_keeps_its_own_io(net_file):
    src = parse_source(f"{net_file}:make", {"width": 12, "blocks": 2})
    model, size = build_model(src)
    assert size == (32, 32)
    assert io_channels(model) == (3, 10)                       # the factory's own, not forced
    assert model.stem[0].out_channels == 12 and len(model.layer) == 2
    model, _ = build_model(src, num_classes=5, in_channels=1)
    assert io_channels(model) == (1, 5)
    assert model.head[1].out_features == 16                    # only the LAST linear changed
    assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("factory,args,reason", [
    ("missing", {}, r"'missing' is not defined .*callables: SmallNet, broken, make, not_a_model"),
    ("HELPER_CONSTANT", {}, "is not callable"),
    ("broken", {}, r"broken\(\) raised ValueError: width 8 is odd$"),
    ("make", {"depth": 3}, "raised TypeError: .*unexpected keyword argument 'depth'"),
    ("not_a_model", {}, "returned int, not a torch.nn.Module"),
])
def test_file_source_errors(net_file, factory, args, reason):
    with pytest.raises(McGraphError, match=reason) as e:
        build_model(parse_source(f"{net_file}:{factory}", args))
    assert "\n" not in str(e.value)


def test_missing_file_and_module(tmp_path):
    with pytest.raises(McGraphError, match=f"{tmp_path / 'nope.py'} does not exist"):
        build_model(parse_source(f"{tmp_path / 'nope.py'}:make"))
    with pytest.raises(McGraphError, match="cannot import module 'no_such_pkg_xyz.models'"):
        build_model(parse_source("no_such_pkg_xyz.models:make"))
    (tmp_path / "bad.py").write_text("import nonexistent_dependency_xyz\n")
    with pytest.raises(McGraphError, match="importing .*bad.py failed: ModuleNotFoundError"):
        build_model(parse_source(f"{tmp_path / 'bad.py'}:make"))


def test_module_source(tmp_path, monkeypatch):
    pkg = tmp_path / "srcpkg_for_mcgraph"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = build_model(parse_source("srcpkg_for_mcgraph.nets:make", {"width": 4}),
                           num_classes=3)
    assert model.stem[0].out_channels == 4 and io_channels(model) == (3, 3)
    sys.modules.pop("srcpkg_for_mcgraph.nets", None)
    sys.modules.pop("srcpkg_for_mcgraph", None)


def test_adapt_io_is_generic():
    model = nn.Sequential(nn.Conv2d(2, 6, 5, stride=2, padding=2, dilation=1, bias=True),
                          nn.ReLU(), nn.Conv2d(6, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 6), nn.Linear(6, 4))
    second, first_fc = model[2], model[5]
    same = adapt_io(model, 2, 4, "test")                       # nothing differs: nothing replaced
    assert same is model and io_channels(model) == (2, 4)
    first_conv = model[0]
    adapt_io(model, 3, 9, "test")
    new = model[0]
    assert new is not first_conv and new.in_channels == 3
    assert (new.out_channels, new.kernel_size, new.stride, new.padding, new.bias is not None) == \
        (6, (5, 5), (2, 2), (2, 2), True)
    assert model[2] is second and model[5] is first_fc         # only first conv / last linear
    assert model[6].out_features == 9 and model(torch.randn(1, 3, 16, 16)).shape == (1, 9)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten())
    with pytest.raises(McGraphError, match="grouped"):
        adapt_io(grouped, 3, None, "test")
    with pytest.raises(McGraphError, match="no nn.Conv2d"):
        adapt_io(nn.Linear(3, 3), 1, None, "test")
    with pytest.raises(McGraphError, match="no nn.Linear"):
        adapt_io(nn.Conv2d(3, 3, 1), None, 5, "test")
    assert io_channels(nn.ReLU()) == (None, None)


def test_weights_apply_to_every_source(net_file, tmp_path):
    src = parse_source(f"{net_file}:make", {"width": 8})
    a, _ = build_model(src, num_classes=4)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b, _ = build_model(src, num_classes=4, weights=tmp_path / "w.pt")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))
    with pytest.raises(McGraphError, match="does not fit"):
        build_model(src, num_classes=5, weights=tmp_path / "w.pt")


def test_rewrite_file_source_records_and_reloads(net_file, tmp_path):
    gm = mcgraph.rewrite(str(net_file) + ":make", fan_in=1, init="prev", input_size=(8, 8),
                         model_args={"width": 8, "blocks": 3}, num_classes=5, in_channels=1)
    masks = [m for m in gm.modules() if isinstance(m, mcgraph.MaskConnect)]
    assert [m.target for m in masks] == ["layer.0", "layer.1", "layer.2"]
    rw = graph_meta.rewrite_record(gm)
    assert rw["model"] == f"{net_file}:make" and rw["model_args"] == {"width": 8, "blocks": 3}
    assert rw["model_kwargs"] == {"num_classes": 5, "in_channels": 1}
    assert rw["input_shape"] == [1, 8, 8]
    path = mcgraph.save(gm, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["description"]["model_args"] == {"width": 8, "blocks": 3}
    with pytest.raises(McGraphError,
                       match=r"file source .*net.py:make.*--trust-code.*trust_code=True"):
        mcgraph.load(path)
    back = mcgraph.load(path, trust_code=True)
    x = rand(2, 1, 8, 8)
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(back, x), rel=0)
    # the user's own model instead of running the recorded code
    own, _ = build_model(parse_source(f"{net_file}:make", {"width": 8, "blocks": 3}), 5, 1)
    assert_same_outputs(eval_outputs(gm, x), eval_outputs(mcgraph.load(path, model=own), x), rel=0)


def test_rewrite_keeps_the_sources_own_io(net_file):
    gm = mcgraph.rewrite(f"{net_file}:make", fan_in=1, model_args={"num_classes": 6})
    rw = graph_meta.rewrite_record(gm)
    assert rw["model_kwargs"] == {"num_classes": 6, "in_channels": 3}   # not forced to 10
    assert rw["input_shape"] == [3, 32, 32]
    reg = mcgraph.rewrite("resnet20", fan_in=1, input_size=(8, 8))
    assert graph_meta.rewrite_record(reg)["model_kwargs"] == {"num_classes": 10, "in_channels": 3}


def test_torchvision_rewrite_and_reload_needs_no_trust(tmp_path):
    gm = mcgraph.rewrite("torchvision:resnet18", fan_in=1, init="prev", input_size=(32, 32),
                         num_classes=7, in_channels=1)
    rw = graph_meta.rewrite_record(gm)
    assert rw["model"] == "torchvision:resnet18"
    assert rw["model_kwargs"] == {"num_classes": 7, "in_channels": 1}
    assert len([m for m in gm.modules() if isinstance(m, mcgraph.MaskConnect)]) == 8
    back = mcgraph.load(mcgraph.save(gm, tmp_path / "tv.pt"))           # trusted: no flag needed
    x = rand(1, 1, 32, 32)
    out = eval_outputs(back, x)
    assert out.shape == (1, 7)
    assert_same_outputs(eval_outputs(gm, x), out, rel=0)


def test_model_source_dataclass():
    src = ModelSource("x.y:make", "module", "x.y", "make", {"a": 1})
    assert not src.trusted and src.args == {"a": 1}


def test_timm_source():
    pytest.importorskip("timm")
    model, size = build_model(parse_source("timm:resnet18"), num_classes=5, in_channels=1)
    assert size == (224, 224)                                  # from its pretrained_cfg
    assert io_channels(model) == (1, 5)
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 5)
    with pytest.raises(McGraphError, match="unknown timm model 'resnet19'.*did you mean"):
        build_model(parse_source("timm:resnet19"))


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)             # import timm -> ImportError
    with pytest.raises(McGraphError, match=r"timm is not installed; pip install 'mcgraph\[timm\]'"):
        build_model(parse_source("timm:resnet18"))


def test_constructor_arguments_that_load_files_are_refused():
    from mcgraph.sources import build_model, parse_source
    for spec, key in (("torchvision:resnet18", "weights"), ("timm:resnet18", "checkpoint_path")):
        with pytest.raises(McGraphError, match=f"model argument {key} loads weights or files"):
            build_model(parse_source(spec, {key: "/tmp/evil.pth"}))


def test_stem_and_head_follow_the_forward_not_the_registration_order():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 10)                       # registered first, called last
            self.block = nn.Conv2d(8, 8, 3, padding=1)
            self.stem = nn.Conv2d(3, 8, 3, padding=1)        # registered last, called first

        def forward(self, x):
            return self.fc(self.block(self.stem(x)).mean((2, 3)))

    from mcgraph.sources import adapt_io, io_channels
    assert io_channels(Backwards()) == (3, 10)
    m = adapt_io(Backwards(), 1, 4)
    assert m.stem.in_channels == 1 and m.block.in_channels == 8 and m.fc.out_features == 4
