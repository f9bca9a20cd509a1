"""The connectivity-learning options each reach the step: annealed sampling, masks learning from
other batches (first-order bi-level), weights restarted at the freeze."""
import torch
from helpers import train_config

from mcgraph.masks import KHotMask
from mcgraph.train import step as step_mod
from mcgraph.train.loop import ANNEAL_FLOOR, Trainer, train


def test_anneal_sharpens_sampling_until_the_freeze(tmp_path, synthetic, monkeypatch):
    seen = []
    orig = KHotMask.sample_rows
    monkeypatch.setattr(KHotMask, "sample_rows",
                        lambda self: seen.append(self.temperature) or orig(self))
    res = train(train_config(tmp_path, epochs=2, mask_anneal=True, freeze_at=0.5, why_batches=0),
                data=synthetic)
    assert seen and seen[0] == 1.0 and min(seen) < 0.5 and min(seen) >= ANNEAL_FLOOR
    assert seen == sorted(seen, reverse=True)            # falling, step by step
    assert res.metrics[-1]["masks_frozen"]


def test_other_batches_give_the_masks_a_step_of_their_own(tmp_path, synthetic, monkeypatch):
    calls = []
    orig = step_mod.Stepper._mask_step
    monkeypatch.setattr(step_mod.Stepper, "_mask_step",
                        lambda self, x, y: calls.append(x.shape) or orig(self, x, y))
    res = train(train_config(tmp_path, epochs=2, mask_batches="other", freeze_at=0.5,
                             why_batches=0), data=synthetic)
    learning = res.metrics[-1]["freeze"]["step"]
    assert len(calls) == learning and learning > 0       # one per learning step, none after


def test_mask_steps_move_only_masks_and_weight_steps_only_weights(synthetic):
    import mcgraph
    from mcgraph.train.config import TrainConfig
    gm = mcgraph.rewrite("resnet20", 1, "uniform", num_classes=10, in_channels=1,
                         input_size=(16, 16)).train()
    st = step_mod.Stepper(gm, TrainConfig(model="resnet20", device="cpu"), torch.device("cpu"))
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    w = gm.conv1.weight.detach().clone()
    m = [p.detach().clone() for p in mcgraph.mask_parameters(gm)]
    st._mask_step(x, y)
    assert torch.equal(w, gm.conv1.weight)
    assert any(not torch.equal(a, b) for a, b in zip(m, mcgraph.mask_parameters(gm)))
    m = [p.detach().clone() for p in mcgraph.mask_parameters(gm)]
    st.step(x, y)                                        # the weights' step that follows
    assert not torch.equal(w, gm.conv1.weight)
    # (the constraint projects again: exact up to its bisection)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(m, mcgraph.mask_parameters(gm)))


def test_reinit_at_freeze_restarts_the_weights_and_keeps_the_wiring(tmp_path, synthetic,
                                                                    monkeypatch):
    checked = []
    orig = Trainer.restart_weights

    def spy(self):
        init = {k: v.clone() for k, v in self.init_weights.items()}
        orig(self)
        state = self.model.state_dict()
        checked.append(all(torch.equal(state[k], v) for k, v in init.items()))
        assert all(m.is_frozen for m in self.model.modules() if isinstance(m, KHotMask))
    monkeypatch.setattr(Trainer, "restart_weights", spy)
    res = train(train_config(tmp_path, epochs=2, reinit_at_freeze=True, freeze_at=0.5,
                             why_batches=0), data=synthetic)
    assert checked == [True] and res.best_acc is not None
