"""Run under torchrun: train a few steps with DDP, then check every rank holds the same masks."""
import sys

import torch
import torch.distributed as dist

from mcgraph.masks import mask_modules
from mcgraph.train.config import TrainConfig
from mcgraph.train.data import load_data
from mcgraph.train.loop import train

out = sys.argv[1]
import mcgraph  # noqa: E402

masked = mcgraph.rewrite("resnet20", fan_in=2, init="uniform", in_channels=1, input_size=(16, 16))
# keep the process group alive after train() so the ranks can compare their masks
dist.init_process_group("gloo")
res = train(TrainConfig(model="resnet20", data="synthetic", out=out, epochs=2, batch_size=32,
                        mask_lr=0.05, freeze_at=1.0, progress=False), data=load_data("synthetic"),
            model=masked)
flat = torch.cat([m.mask.detach().flatten() for m in mask_modules(masked)] +
                 [torch.cat([p.detach().flatten() for p in masked.parameters()])[:1000]])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(gathered[0], g) for g in gathered), "ranks disagree"
print(f"rank {dist.get_rank()} steps {res.steps} ok", flush=True)
