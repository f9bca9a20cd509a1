"""mcgraph.train.data: file parsers read back exactly what was written; loaders are repeatable."""
from __future__ import annotations

import gzip
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mcgraph.errors import McGraphError
from mcgraph.train.data import DATASETS, Data, DataSpec, TensorImageDataset, load_data, make_loader

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


# ------------------------------------------------------------------ helpers

def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fmnist(d: Path, n_train: int = 5, n_test: int = 3, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, (n,), dtype=np.uint8)
        arrays[prefix] = (imgs, lbls)
        for stem, arr, magic in ((f"{prefix}-images-idx3-ubyte", imgs, 2051),
                                 (f"{prefix}-labels-idx1-ubyte", lbls, 2049)):
            raw = _idx_bytes(arr, magic)
            if gz:
                (d / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (d / stem).write_bytes(raw)
    return arrays


def _write_cifar(d: Path, name: str, per_batch: int = 2, seed: int = 0):
    """torchvision's python layout; returns {split: (data (N, 3072), labels)}."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, classes = "cifar-10-batches-py", {
            "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, \
            b"labels", 10
    else:
        folder, files, key, classes = "cifar-100-python", {"train": ["train"], "test": ["test"]}, \
            b"fine_labels", 100
    (d / folder).mkdir()
    out = {}
    for split, names in files.items():
        datas, labels = [], []
        for i, fname in enumerate(names):
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, classes, per_batch)]
            with open(d / folder / fname, "wb") as f:
                # alternate protocols: old (py2-era) and in-band protocol-5 numpy pickles
                pickle.dump({b"data": data, key: lab, b"batch_label": b"x"}, f,
                            protocol=2 if i % 2 else 5)
            datas.append(data)
            labels += lab
        out[split] = (np.concatenate(datas), np.array(labels))
    return out


def _tensor_data(n: int = 10, spec_kw: dict | None = None, c: int = 1, h: int = 6, w: int = 5):
    images = torch.arange(n * c * h * w, dtype=torch.int64).remainder(251).to(torch.uint8) \
        .view(n, c, h, w)
    labels = torch.arange(n) % 3
    spec = DataSpec("toy", 3, c, (h, w), (0.5,) * c, (0.25,) * c, n, n,
                    augment_flip=False, crop_padding=0)
    spec = replace(spec, **(spec_kw or {}))
    ds = TensorImageDataset(images, labels)
    return Data(spec, ds, ds)


def _all(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# ------------------------------------------------------------------ Fashion-MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_roundtrip(tmp_path, gz):
    arrays = _write_fmnist(tmp_path, gz=gz)
    data = load_data("fashion-mnist", data_dir=str(tmp_path))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = getattr(data, split)
        imgs, lbls = arrays[prefix]
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(imgs), 1, 28, 28)
        assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs))
        assert ds.labels.dtype == torch.int64
        assert ds.labels.tolist() == lbls.tolist()
        x, y = ds[2]
        assert torch.equal(x[0], torch.from_numpy(imgs[2])) and y == int(lbls[2])
    assert (data.spec.train_size, data.spec.test_size) == (5, 3)
    assert data.spec.num_classes == 10 and data.spec.in_channels == 1
    assert data.spec.crop_padding == 2 and data.spec.augment_flip


def test_fashion_mnist_truncated_idx(tmp_path):
    _write_fmnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))               # valid gzip, short payload
    with pytest.raises(McGraphError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_data("fashion-mnist", data_dir=str(tmp_path))
    path.write_bytes(gzip.compress(raw)[:-20])              # cut gzip stream
    with pytest.raises(McGraphError, match="train-images-idx3-ubyte.gz.*truncated or corrupt"):
        load_data("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_bad_magic(tmp_path):
    _write_fmnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 0x03                                          # 2049 -> 2051
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(McGraphError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        load_data("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_missing_file(tmp_path):
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(McGraphError, match=f"t10k-labels-idx1-ubyte.gz not found in {tmp_path}"):
        load_data("fashion-mnist", data_dir=str(tmp_path))


def test_fashion_mnist_absent_everywhere_says_what_to_install(tmp_path, monkeypatch):
    import torchvision

    import mcgraph.train.data as data_mod

    def no_download(*a, **k):
        raise RuntimeError("offline")

    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(data_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_download)
    with pytest.raises(McGraphError, match="apt-get install dataset-fashion-mnist.*data_dir"):
        load_data("fashion-mnist")


def _no_local_fmnist(tmp_path, monkeypatch, download):
    import torchvision

    import mcgraph.train.data as data_mod
    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(data_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", download)


@pytest.mark.parametrize("error", [
    __import__("urllib.error").error.URLError("[Errno -3] Temporary failure in name resolution"),
    OSError(101, "Network is unreachable"),
    RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..."),
])
def test_fashion_mnist_offline_download_says_why_and_how(tmp_path, monkeypatch, error):
    def download(*a, **k):
        raise error

    _no_local_fmnist(tmp_path, monkeypatch, download)
    with pytest.raises(McGraphError) as e:
        load_data("fashion-mnist")
    msg = str(e.value)
    assert "\n" not in msg
    reason = str(error).splitlines()[0]
    assert f"could not download it to {tmp_path / 'cache'} ({type(error).__name__}: " in msg
    assert reason in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data_dir" in msg


def test_fashion_mnist_without_torchvision_says_so(tmp_path, monkeypatch):
    import sys
    _no_local_fmnist(tmp_path, monkeypatch, None)
    monkeypatch.setitem(sys.modules, "torchvision", None)      # import torchvision fails
    with pytest.raises(McGraphError, match=r"could not download it .*ModuleNotFoundError: .*"
                                           r"torchvision.*apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")


def test_fashion_mnist_download_bugs_are_not_swallowed(tmp_path, monkeypatch):
    def download(*a, **k):
        raise TypeError("FashionMNIST.__init__() got an unexpected keyword argument 'root'")

    _no_local_fmnist(tmp_path, monkeypatch, download)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_data("fashion-mnist")


@pytest.mark.skipif(not REAL_FMNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    data = load_data("fashion-mnist")
    assert data.train.images.shape == (60000, 1, 28, 28)
    assert data.test.images.shape == (10000, 1, 28, 28)
    assert (data.spec.train_size, data.spec.test_size) == (60000, 10000)
    assert data.spec.num_classes == 10 and data.spec.input_size == (28, 28)
    assert torch.bincount(data.train.labels).tolist() == [6000] * 10
    # the published normalization constants match the data
    assert abs(data.train.images.float().mean().item() / 255 - data.spec.mean[0]) < 1e-3


# ------------------------------------------------------------------ CIFAR

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar_roundtrip(tmp_path, name, point_at_folder):
    written = _write_cifar(tmp_path, name)
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    data = load_data(name, data_dir=str(tmp_path / folder if point_at_folder else tmp_path))
    for split in ("train", "test"):
        ds = getattr(data, split)
        raw, labels = written[split]
        assert ds.images.shape == (len(raw), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert ds.labels.tolist() == labels.tolist()
        # row layout: 1024 R, 1024 G, 1024 B, each plane row-major
        n, y, x = len(raw) - 1, 7, 19
        for c in range(3):
            assert ds.images[n, c, y, x].item() == raw[n, c * 1024 + y * 32 + x]
        assert torch.equal(ds.images.reshape(len(raw), -1), torch.from_numpy(raw))
    assert data.spec.num_classes == (10 if name == "cifar10" else 100)
    assert data.spec.train_size == (10 if name == "cifar10" else 2)
    assert data.spec.crop_padding == 4 and data.spec.in_channels == 3


def test_cifar_truncated_pickle(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(McGraphError, match="data_batch_3 is truncated or corrupt"):
        load_data("cifar10", data_dir=str(tmp_path))


def test_cifar_refuses_code_in_pickle(tmp_path):
    _write_cifar(tmp_path, "cifar100")
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(pickle.dumps({b"data": print}))       # any non-numpy global is refused
    with pytest.raises(McGraphError, match="test is truncated or corrupt"):
        load_data("cifar100", data_dir=str(tmp_path))


def test_cifar_needs_data_dir(tmp_path):
    with pytest.raises(McGraphError, match="cifar10 needs data_dir .*cifar-10-batches-py"):
        load_data("cifar10")
    with pytest.raises(McGraphError, match="cifar-100-python"):
        load_data("cifar100", data_dir=str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(McGraphError, match="unknown dataset 'mnist'"):
        load_data("mnist")
    assert "synthetic" in DATASETS


def test_imagefolder_missing(tmp_path):
    with pytest.raises(McGraphError, match="train/ and val/"):
        load_data(f"imagefolder:{tmp_path}")


def test_imagefolder_loads_and_batches(tmp_path):
    from PIL import Image
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (40, 20), color=60 * k + i).save(tmp_path / split / cls / f"{i}.png")
    data = load_data(f"imagefolder:{tmp_path}")
    assert data.spec.num_classes == 2 and data.spec.train_size == 6
    x, y = data.train[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == 1
    assert int(x[0, 5, 5]) == 61
    loader = make_loader(data, "train", 4, shuffle=True, augment=True, seed=1)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][0].dtype == torch.float32
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, loader))


# ------------------------------------------------------------------ synthetic

def test_synthetic_deterministic_and_normalized():
    a, b = load_data("synthetic"), load_data("synthetic")
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.shape == (512, 1, 16, 16) and a.test.images.shape == (256, 1, 16, 16)
    assert sorted(torch.bincount(a.train.labels).tolist()) == [51] * 8 + [52] * 2  # balanced
    assert a.spec == b.spec and not a.spec.augment_flip and a.spec.crop_padding == 0
    x, _ = _all(make_loader(a, "train", 100, shuffle=False, augment=False))
    assert x.shape == (512, 1, 16, 16)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_synthetic_is_learnable_by_nearest_mean():
    """The class patterns survive the noise: nearest class mean on train classifies test well."""
    data = load_data("synthetic")
    xtr, ytr = data.train.images.float().flatten(1), data.train.labels
    centers = torch.stack([xtr[ytr == k].mean(0) for k in range(10)])
    pred = torch.cdist(data.test.images.float().flatten(1), centers).argmin(1)
    assert (pred == data.test.labels).float().mean() > 0.9


# ------------------------------------------------------------------ make_loader

def test_loader_repeatable_and_epoch_dependent():
    data = load_data("synthetic")
    kw = dict(shuffle=True, augment=True, seed=3)
    a = list(make_loader(data, "train", 64, epoch=2, **kw))
    b = list(make_loader(data, "train", 64, epoch=2, **kw))
    c = list(make_loader(data, "train", 64, epoch=3, **kw))
    assert len(a) == 8
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(torch.cat([x for x, _ in a]), torch.cat([x for x, _ in c]))
    # the order depends on the epoch, the content does not
    xa, xc = torch.cat([x for x, _ in a]), torch.cat([x for x, _ in c])
    assert torch.allclose(xa.sum(0), xc.sum(0), atol=1e-2)
    d = list(make_loader(data, "train", 64, epoch=2, shuffle=True, augment=True, seed=4))
    assert not torch.equal(xa, torch.cat([x for x, _ in d]))


def test_loader_unshuffled_exact_normalized_and_labels():
    data = _tensor_data(n=10)
    x, y = _all(make_loader(data, "test", 4, shuffle=False, augment=True))
    expected = (data.test.images.float() / 255 - 0.5) / 0.25
    assert x.dtype == torch.float32 and torch.equal(x, expected)   # pad 0, no flip: identity
    assert y.dtype == torch.int64 and torch.equal(y, data.test.labels)


def test_loader_shards_disjoint_and_cover():
    data = _tensor_data(n=10)
    ranks = [make_loader(data, "train", 3, shuffle=True, augment=False, seed=7, rank=r,
                         world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    ids = []
    for loader in ranks:
        x, _ = _all(loader)
        ids.append({int(v) for v in (x[:, 0, 0, 0] * 0.25 + 0.5).mul(255).round()})
    first_pixels = {int(v) for v in data.train.images[:, 0, 0, 0]}
    assert len(ids[0]) == len(ids[1]) == 5
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == first_pixels


def test_loader_uneven_shards_same_batch_count():
    data = _tensor_data(n=11)
    for drop_last, per_rank in ((False, 6), (True, 5)):
        loaders = [make_loader(data, "train", 2, shuffle=True, augment=False, drop_last=drop_last,
                               rank=r, world_size=2) for r in range(2)]
        idx = [ld.indices() for ld in loaders]
        assert [len(i) for i in idx] == [per_rank, per_rank]
        assert len(loaders[0]) == len(loaders[1]) == len(list(loaders[1]))
        union = set(torch.cat(idx).tolist())
        assert len(union) == (11 if not drop_last else 10)   # wrap pads, truncation drops one


def test_loader_max_samples_and_drop_last():
    data = load_data("synthetic")
    loader = make_loader(data, "train", 32, shuffle=True, augment=False, max_samples=100,
                         drop_last=True)
    assert len(loader) == 3
    assert set(loader.indices().tolist()) <= set(range(100))
    assert all(x.shape[0] == 32 for x, _ in loader)
    assert len(make_loader(data, "train", 32, shuffle=True, augment=False, max_samples=100)) == 4


def test_augment_crop_and_flip_are_windows_of_padded_image():
    pad = 2
    data = _tensor_data(n=16, spec_kw=dict(crop_padding=pad, augment_flip=True), c=2)
    x, _ = _all(make_loader(data, "train", 16, shuffle=False, augment=True, seed=5))
    assert x.shape == (16, 2, 6, 5)
    raw = ((x * 0.25 + 0.5) * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(data.train.images, (pad,) * 4)
    shifts, flips = set(), 0
    for i in range(16):
        windows = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   for f in (False, True)
                   if torch.equal(raw[i], (lambda w: w.flip(2) if f else w)(
                       padded[i, :, dy:dy + 6, dx:dx + 5]))]
        assert windows, f"sample {i} is not a (flipped) crop of its padded image"
        shifts.add(windows[0][:2])
        flips += windows[0][2]
    assert len(shifts) > 3 and 0 < flips < 16          # offsets and flips vary per sample


def test_loader_rejects_bad_arguments():
    data = _tensor_data()
    with pytest.raises(McGraphError, match="rank 2"):
        make_loader(data, "train", 4, shuffle=False, augment=False, rank=2, world_size=2)
    with pytest.raises(McGraphError, match="split"):
        make_loader(data, "val", 4, shuffle=False, augment=False)


# ------------------------------------------------------------------ validation split
def test_validation_split_is_held_out_fixed_and_disjoint():
    from mcgraph.train.split import split_validation
    data = load_data("synthetic")
    a, b = split_validation(data, 100), split_validation(data, 100)
    assert len(a.val) == 100 and len(a.train) == len(data.train) - 100 == a.spec.train_size
    assert torch.equal(a.val.images, b.val.images)                 # the same split every run
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.images}   # noqa: E731
    assert not rows(a.val) & rows(a.train)                          # no image in both
    assert rows(a.val) | rows(a.train) == rows(data.train)
    assert split_validation(data, 0) is data and split_validation(data).val is not None
    with pytest.raises(McGraphError, match="val_size"):
        split_validation(data, len(data.train))
