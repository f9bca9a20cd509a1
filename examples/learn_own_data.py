"""Learn a ResNet's connectivity on your own data, from Python, and compare it with the original.

    python examples/learn_own_data.py                          # 2,000 images of 32x32: ~5 min
    python examples/learn_own_data.py --data imagefolder:DIR   # DIR/train/<class>/*.png, DIR/val/
    python examples/learn_own_data.py --tiny                   # seconds (tests/test_examples.py)
"""
import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import mcgraph
from mcgraph.train.data import load_data

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", help="a data set name or imagefolder:DIR (default: generated images)")
p.add_argument("--model", default="resnet20")
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--tiny", action="store_true", help="256 images of 16x16, 1 epoch, 6 own steps")
p.add_argument("--out", default="own-data-out")
args = p.parse_args()
n, size, epochs, steps = (256, 16, 1, 6) if args.tiny else (2000, 32, args.epochs, 100)
NAMES = ["disc", "square", "cross"]


def shapes(count, seed):
    """Images (count, 1, size, size) in [0, 1]: one shape each, anywhere, any size, on noise."""
    g = torch.Generator().manual_seed(seed)
    yx = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
    dy, dx = (yx[:, None] - (torch.rand(2, count, 1, 1, generator=g) * 0.4 + 0.3) * size).abs()
    r = (torch.rand(count, 1, 1, generator=g) * 0.15 + 0.15) * size
    box = (dx <= r) & (dy <= r)
    kinds = torch.stack([dx ** 2 + dy ** 2 <= r ** 2, box, box & ((dx <= r / 3) | (dy <= r / 3))])
    y = torch.arange(count) % len(NAMES)
    noise = torch.rand(count, size, size, generator=g)
    return (0.7 * kinds[y, torch.arange(count)] + 0.3 * noise)[:, None], y


# Tensors in memory become a data set; mean and std are measured on the training images and go
# into the ONNX file with the class names, so a deployment normalizes exactly as training did.
data = (load_data(args.data) if args.data
        else mcgraph.tensor_data(*shapes(n, 0), *shapes(n // 4, 1), class_names=NAMES))
out = Path(args.out)
# One budget for both: learned K=1 connectivity, and the original wiring (each block reads the one
# before). why_batches=0 skips a diagnostic at the freeze (`mcgraph inspect --why` has it).
budget = dict(epochs=epochs, batch_size=64, seed=0, why_batches=0, progress=False)
for rule in ("learned", "fixed-prev"):
    r = mcgraph.fit(args.model, data, fan_in=1, connectivity=rule, out=str(out / rule), **budget)
    # best.pt: the epoch best on held-out training images (never test), masks frozen by then
    slim, report = mcgraph.compile(mcgraph.load(Path(r.out) / "best.pt"))
    print(f"{rule:10}  test acc {r.best_acc:5.1f}%  compiled params {report.params_after:,}  "
          f"blocks {report.modules_after}/{report.modules_before}")
    if rule == "learned":
        mcgraph.export_onnx(slim, out / "learned.onnx", tuple(report.input_shape),
                            data=data.spec, params=report.params_after)

# ---------------- The same by hand: your own training loop (docs/training.md) ----------------
mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.spec.mean, data.spec.std))
train = DataLoader(data.train, batch_size=64, shuffle=True, drop_last=True)   # uint8 images
batches = (((x.float() / 255 - mean) / std, y) for _ in itertools.count() for x, y in train)
x_test, y_test = next(iter(DataLoader(data.test, batch_size=1000)))
x_test = (x_test.float() / 255 - mean) / std
model = mcgraph.rewrite(args.model, fan_in=1, in_channels=data.spec.in_channels,
                        num_classes=data.spec.num_classes, input_size=data.spec.input_size)
# the masks get a group of their own: their learning rate, no momentum, no weight decay
opt = torch.optim.SGD(mcgraph.param_groups(model, mask_lr=0.05, weight_decay=5e-4),
                      lr=0.05, momentum=0.9, nesterov=True)
for step in range(steps):
    if step == int(0.3 * steps):       # learn the wiring first, then the weights on it
        # Each training forward samples another wiring, so BatchNorm's running statistics fit no
        # single one: re-estimate them under the top-K wiring (on a copy) to evaluate meanwhile.
        with torch.no_grad():
            ev = mcgraph.recalibrate_bn(model, itertools.islice(batches, 20))
            acc = (ev(x_test).argmax(1) == y_test).float().mean()
        print(f"custom loop: step {step}, test acc {acc:.0%} (top-K wiring); freezing")
        mcgraph.freeze_masks(model)    # top-K, for good: from here on the weights see one wiring
    x, y = next(batches)
    loss = F.cross_entropy(model.train()(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    mcgraph.constrain_masks_(model)    # back onto {0 <= m <= 1, sum m = K}; no-op once frozen
slim, report = mcgraph.compile(model)  # frozen: compile accepts it (eval mode, BN folded)
acc = (slim(x_test).argmax(1) == y_test).float().mean()
print(f"custom loop: {steps} steps, test acc {acc:.0%}, compiled params {report.params_after:,}")
