"""Run under torchrun: train a few steps with DDP, then check every rank holds the same masks,
weights and buffers, that training moved them, and that rank 0's last.pt is exactly that state."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mcgraph.train.config import TrainConfig
from mcgraph.train.data import load_data
from mcgraph.train.loop import train

out = Path(sys.argv[1])
import mcgraph  # noqa: E402

masked = mcgraph.rewrite("resnet20", fan_in=2, init="uniform", in_channels=1, input_size=(16, 16))
masks0 = [p.detach().clone() for p in mcgraph.mask_parameters(masked)]
mask_ids = {id(p) for p in mcgraph.mask_parameters(masked)}
weights0 = {k: v.detach().clone() for k, v in masked.named_parameters() if id(v) not in mask_ids}
# keep the process group alive after train() so the ranks can compare their state
dist.init_process_group("gloo")
assert dist.get_world_size() == 2
res = train(TrainConfig(model="resnet20", data="synthetic", out=str(out), epochs=2, batch_size=32,
                        mask_lr=0.05, freeze_at=1.0, progress=False, device="cpu"),
            data=load_data("synthetic"),
            model=masked)
# 512 images over 2 ranks, batch 32 each: 8 steps per epoch
assert (res.steps, res.epochs_done, res.stopped) == (14, 2, "done"), res

# the masks learned (they start uniform, so identical-but-untouched would pass the check below)
moved = [not torch.equal(a, b.detach()) for a, b in zip(masks0, mcgraph.mask_parameters(masked))]
assert sum(moved) >= len(moved) - 1, moved        # layer1.0 has one candidate: nothing to learn
changed = [k for k, v in masked.named_parameters()
           if k in weights0 and not torch.equal(v.detach(), weights0[k])]
# the stem and the head train every step; a block trains only in the steps whose wiring reads
# it, and decisive masks stop drawing the losing blocks early
outside = [k for k in weights0 if not k.startswith("layer")]
assert set(outside) <= set(changed), sorted(set(outside) - set(changed))
assert len(changed) >= len(weights0) // 2, sorted(set(weights0) - set(changed))

state = masked.state_dict()
flat = torch.cat([state[k].detach().double().flatten() for k in sorted(state)])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert all(torch.equal(gathered[0], g) for g in gathered), "ranks disagree"

# train() returns after a barrier, so rank 0 has written last.pt: it holds this very state
ckpt = torch.load(out / "last.pt", weights_only=True)
assert ckpt["state_dict"].keys() == state.keys()
bad = [k for k in state if not torch.equal(state[k].cpu(), ckpt["state_dict"][k])]
assert not bad, bad[:5]
assert ckpt["train"]["step"] == 14 and ckpt["train"]["epoch"] == 2
print(f"rank {dist.get_rank()} steps {res.steps} ok", flush=True)
