import pytest
import torch

import mcgraph
from mcgraph import McGraphError, count_params, create_model, list_models


def test_registry_lists_paper_and_torchvision_models():
    names = list_models()
    for n in ("resnet20", "resnet32", "resnet38", "resnet44", "resnet56", "resnet74", "resnet110",
              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
              "wide_resnet50_2", "wide_resnet101_2"):
        assert n in names


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet56", 0.85e6),
                                         ("resnet110", 1.7e6)])
def test_cifar_resnet_sizes_match_he_et_al(name, params):
    n = count_params(create_model(name))
    assert abs(n - params) / params < 0.03, n


def test_in_channels_and_num_classes():
    m = create_model("resnet20", num_classes=7, in_channels=1).eval()
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    r = create_model("resnet18", num_classes=5, in_channels=1).eval()
    assert r.conv1.in_channels == 1 and r(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(McGraphError, match="unknown model 'resnet21'"):
        create_model("resnet21")


def test_weights_load_and_mismatch(tmp_path):
    src = create_model("resnet20", num_classes=10)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = create_model("resnet20", num_classes=10, weights=tmp_path / "w.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src.eval()(x), dst.eval()(x))
    with pytest.raises(McGraphError, match="does not fit resnet32"):
        create_model("resnet32", weights=tmp_path / "w.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    with pytest.raises(McGraphError, match="not a loadable state_dict"):
        create_model("resnet20", weights=tmp_path / "junk.pt")


def test_register_model_decorator_adds_a_model():
    @mcgraph.register_model("test", (8, 8))
    def tiny_test_net(num_classes=10, in_channels=3):
        return create_model("resnet20", num_classes=num_classes, in_channels=in_channels)
    assert "tiny_test_net" in list_models()


def _cifar_resnet_params(n: int, in_channels: int = 3, classes: int = 10) -> int:
    """The CIFAR ResNet-(6n+2) family's count, option-A shortcuts (He et al. 2016, section 4.2):
    stem conv and BN, n blocks of two 3x3 conv + BN per stage (16, 32, 64 wide), fc."""
    block = lambda cin, c: 9 * cin * c + 9 * c * c + 4 * c          # noqa: E731
    stages = sum(block(cin, c) + (n - 1) * block(c, c) for cin, c in ((16, 16), (16, 32), (32, 64)))
    return 9 * in_channels * 16 + 32 + stages + 64 * classes + classes


@pytest.mark.parametrize("name,n", [("resnet8", 1), ("resnet14", 2), ("resnet20", 3),
                                    ("resnet32", 5), ("resnet56", 9), ("resnet110", 18)])
def test_cifar_resnets_have_the_family_parameter_counts(name, n):
    model = mcgraph.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == _cifar_resnet_params(n)
    blocks = [m for m in model.modules() if type(m).__name__ == "CifarBasicBlock"]
    assert len(blocks) == 3 * n


def test_the_paper_reports_these_sizes():
    # He et al. report 0.27M (ResNet-20), 0.46M (32), 0.85M (56), 1.7M (110)
    for name, millions in (("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85),
                           ("resnet110", 1.7)):
        count = sum(p.numel() for p in mcgraph.create_model(name).parameters())
        assert round(count / 1e6, 2 if millions < 1 else 1) == millions, (name, count)
