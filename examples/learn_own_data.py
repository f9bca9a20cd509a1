"""Learn a ResNet's connectivity on your own data, from Python, and compare it with the original.

    python examples/learn_own_data.py                      # 2,000 generated shapes, 32x32
    python examples/learn_own_data.py --data imagefolder:DIR   # DIR/train/<class>/*.png, DIR/val/
    python examples/learn_own_data.py --tiny               # seconds (tests/test_examples.py)
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
p.add_argument("--data", help="a data set name or imagefolder:DIR (default: generated shapes)")
p.add_argument("--model", default="resnet20")
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--images", type=int, default=2000, help="generated training images")
p.add_argument("--custom-steps", type=int, default=100, help="steps of the hand-written loop")
p.add_argument("--tiny", action="store_true", help="256 images of 16x16, 1 epoch, 6 steps")
p.add_argument("--out", default="own-data-out")
args = p.parse_args()
n, size = (256, 16) if args.tiny else (args.images, 32)
epochs, custom_steps = (1, 6) if args.tiny else (args.epochs, args.custom_steps)
NAMES = ["disc", "square", "ring", "cross"]


def shapes(count, seed):
    """Images (count, 1, size, size) in [0, 1], one shape each, anywhere, any size, on noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (torch.rand(2, count, 1, 1, generator=g) * 0.4 + 0.3) * size
    r = (torch.rand(count, 1, 1, generator=g) * 0.15 + 0.15) * size
    dy, dx = (yy - cy).abs(), (xx - cx).abs()
    disc = dx ** 2 + dy ** 2 <= r ** 2
    ring = disc & (dx ** 2 + dy ** 2 >= (r / 2) ** 2)
    cross = ((dx <= r / 3) & (dy <= r)) | ((dy <= r / 3) & (dx <= r))
    kinds = torch.stack([disc, (dx <= r) & (dy <= r), ring, cross])
    labels = torch.arange(count) % len(NAMES)
    x = 0.7 * kinds[labels, torch.arange(count)] + 0.3 * torch.rand(count, size, size, generator=g)
    return x[:, None], labels


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
spec = data.spec
mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
train = DataLoader(data.train, batch_size=64, shuffle=True, drop_last=True)
batches = (((x.float() / 255 - mean) / std, y) for _ in itertools.count() for x, y in train)
model = mcgraph.rewrite(args.model, fan_in=1, in_channels=spec.in_channels,
                        num_classes=spec.num_classes, input_size=spec.input_size)
# masks get a group of their own: their learning rate, no momentum, no weight decay
opt = torch.optim.SGD(mcgraph.param_groups(model, mask_lr=0.05, weight_decay=5e-4),
                      lr=0.05, momentum=0.9, nesterov=True)
freeze_step = int(0.3 * custom_steps)     # learn the wiring first, then the weights on it
model.train()
for step in range(custom_steps):
    if step == freeze_step:
        # Each training forward samples another wiring, so BatchNorm's running statistics fit no
        # single one: re-estimate them under the top-K wiring (on a copy) to evaluate meanwhile.
        ev = mcgraph.recalibrate_bn(model, itertools.islice(batches, 20))
        x, y = next(batches)
        print(f"custom loop: step {step}, batch acc under the top-K wiring "
              f"{(ev(x).argmax(1) == y).float().mean():.0%}; freezing")
        mcgraph.freeze_masks(model)     # top-K, for good: from here on weights see one wiring
    x, y = next(batches)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    mcgraph.constrain_masks_(model)     # back onto {0 <= m <= 1, sum m = K} (a no-op once frozen)
slim, report = mcgraph.compile(model)   # frozen: compile accepts it
print(f"custom loop: {custom_steps} steps, last loss {loss.item():.3f}, "
      f"compiled params {report.params_after:,}")
