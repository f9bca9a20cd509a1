"""Datasets as in-memory uint8 tensors, and batched loaders that augment on the device.

    data = load_data("fashion-mnist")                  # or "cifar10" + data_dir, "synthetic",
    data.spec.num_classes, data.spec.input_size        # "imagefolder:/path/to/dir"
    for x, y in make_loader(data, "train", 128, shuffle=True, augment=True,
                            seed=0, epoch=3, device="cuda"):
        ...                                            # x: float32 (B, C, H, W) normalized

Small datasets live in memory as ``TensorImageDataset`` (uint8 ``(N, C, H, W)`` + int64 labels),
so a batch is one indexing op and augmentation (random crop, horizontal flip) is vectorized;
no worker processes, no per-sample Python. Shuffling and augmentation draw from generators
seeded by ``(seed, epoch)``: a resumed run at epoch k sees exactly the batches it would have.
"""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import McGraphError, first_line

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic")  # plus "imagefolder:DIR"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
CACHE_DIR = Path.home() / ".cache" / "mcgraph"  # torchvision download fallback only

_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_INSTALL_FMNIST = "install them with 'apt-get install dataset-fashion-mnist' or pass data_dir"


@dataclass(frozen=True)
class DataSpec:
    name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]      # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    augment_flip: bool               # horizontal flip makes sense for this data
    crop_padding: int                # random-crop zero padding; 0 disables cropping
    class_names: tuple[str, ...] | None = None   # label i's name, where the data set has names


@dataclass
class Data:
    spec: DataSpec
    train: Dataset
    test: Dataset
    val: Dataset | None = None       # held out from the training images (see train/split.py)


class TensorImageDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` held in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise McGraphError("data", f"images must be uint8 (N, C, H, W), got {images.dtype} "
                                       f"{tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise McGraphError("data", f"{images.shape[0]} images but labels of shape "
                                       f"{tuple(labels.shape)}")
        self.images, self.labels = images, labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)

def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) of unsigned bytes; exact-length check."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # truncated/garbled gzip stream
        raise McGraphError("data", f"{path} is truncated or corrupt ({e})") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        raise McGraphError("data", f"{path} is corrupt: bad IDX magic number (expected {magic})")
    header = 4 + 4 * (magic & 0xFF)            # low byte of the magic = number of dims
    if len(raw) < header:
        raise McGraphError("data", f"{path} is truncated: incomplete IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=magic & 0xFF, offset=4))
    if len(raw) - header != math.prod(dims):
        raise McGraphError("data", f"{path} is truncated or corrupt: header says {dims} "
                                   f"({math.prod(dims)} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    for cand in (directory / f"{stem}.gz", directory / stem):
        if cand.is_file():
            return cand
    return None


def _fmnist_dir(data_dir: str | None) -> Path:
    def complete(d: Path) -> bool:
        return all(_find_idx(d, s) for pair in _FMNIST_FILES.values() for s in pair)

    if data_dir is not None:
        d = Path(data_dir)
        for cand in (d, d / "FashionMNIST" / "raw"):   # also accept torchvision's layout
            if complete(cand):
                return cand
        missing = next(s for pair in _FMNIST_FILES.values() for s in pair if not _find_idx(d, s))
        raise McGraphError("data", f"fashion-mnist: {missing}.gz not found in {d}")
    if complete(Path(FASHION_MNIST_DIR)):
        return Path(FASHION_MNIST_DIR)
    cache = Path(CACHE_DIR) / "FashionMNIST" / "raw"
    if not complete(cache):
        why = ""
        try:
            import torchvision
            for train in (True, False):
                torchvision.datasets.FashionMNIST(root=str(CACHE_DIR), train=train, download=True)
        # what "not available here" raises: no torchvision (ImportError), offline or a mirror
        # down (URLError, socket and SSL errors: OSError), torchvision's "Error downloading" or
        # a failed checksum (RuntimeError), a truncated archive (EOFError); anything else is a
        # bug and surfaces
        except (ImportError, OSError, RuntimeError, EOFError) as e:
            why = (f" and could not download it to {CACHE_DIR} "
                   f"({type(e).__name__}: {first_line(e)})")
        if not complete(cache):
            raise McGraphError("data", f"fashion-mnist: files not found in {FASHION_MNIST_DIR}"
                                       f"{why}; {_INSTALL_FMNIST}", "data_dir")
    return cache


def _load_fashion_mnist(data_dir: str | None) -> Data:
    d = _fmnist_dir(data_dir)
    splits = {}
    for split, (img_stem, lbl_stem) in _FMNIST_FILES.items():
        img_path, lbl_path = _find_idx(d, img_stem), _find_idx(d, lbl_stem)
        images, labels = _read_idx(img_path, 2051), _read_idx(lbl_path, 2049)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise McGraphError("data", f"fashion-mnist: {img_path} holds {images.shape} images, "
                                       f"{lbl_path} {len(labels)} labels; expected N x 28 x 28, N")
        if labels.size and labels.max() >= 10:
            raise McGraphError("data",
                               f"fashion-mnist: {lbl_path} is corrupt (label {labels.max()})")
        splits[split] = TensorImageDataset(torch.from_numpy(images).unsqueeze(1),
                                           torch.from_numpy(labels).long())
    spec = DataSpec("fashion-mnist", 10, 1, (28, 28), (0.2860,), (0.3530,),
                    len(splits["train"]), len(splits["test"]), augment_flip=True, crop_padding=2)
    return Data(spec, splits["train"], splits["test"])


# ---------------------------------------------------------------- CIFAR (torchvision python layout)

_CIFAR = {  # name: (folder, train files, test files, label key, classes, mean, std)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class _NumpyUnpickler(pickle.Unpickler):
    """CIFAR batches only contain dicts, lists and numpy arrays; refuse anything else so a
    malicious file cannot run code."""
    _MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                "numpy.core.numeric", "numpy._core.numeric"}
    _NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's own signature
        # _codecs.encode: how protocol <= 2 pickles written by Python 3 spell bytes objects
        if (module in self._MODULES and name in self._NAMES) or (module, name) == ("_codecs",
                                                                                    "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise McGraphError("data", f"{path} not found")
    try:
        with open(path, "rb") as f:
            entry = _NumpyUnpickler(f, encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as e:  # pickle raises many types (EOFError, UnpicklingError, KeyError...)
        raise McGraphError("data", f"{path} is truncated or corrupt ({type(e).__name__}: {e})") \
            from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise McGraphError("data", f"{path} is corrupt: data {data.shape}, labels {labels.shape}")
    # each row is 1024 R, then 1024 G, then 1024 B values, each plane row-major 32x32
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _load_cifar(name: str, data_dir: str | None) -> Data:
    folder, train_files, test_files, key, classes, mean, std = _CIFAR[name]
    if data_dir is None:
        raise McGraphError("data", f"{name} needs data_dir pointing at a directory "
                                   f"containing {folder}", "data_dir")
    base = Path(data_dir)
    d = base / folder if (base / folder).is_dir() else base   # parent or the folder itself
    if not (d / test_files[0]).is_file():
        raise McGraphError("data", f"{name}: {folder}/{test_files[0]} not found in {base}; "
                                   f"pass data_dir pointing at a directory containing {folder}",
                           "data_dir")
    splits = {}
    for split, files in (("train", train_files), ("test", test_files)):
        parts = [_read_cifar_batch(d / f, key) for f in files]
        images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
            raise McGraphError("data", f"{name}: labels outside 0..{classes - 1} in {d}")
        splits[split] = TensorImageDataset(images, labels)
    spec = DataSpec(name, classes, 3, (32, 32), mean, std, len(splits["train"]),
                    len(splits["test"]), augment_flip=True, crop_padding=4)
    return Data(spec, splits["train"], splits["test"])


# ---------------------------------------------------------------- synthetic & ImageFolder

def _load_synthetic() -> Data:
    """10 fixed random 16x16 patterns plus Gaussian noise: learnable in ~100 steps, no files."""
    g = torch.Generator().manual_seed(20240601)
    patterns = torch.rand(10, 1, 16, 16, generator=g)

    def make(n: int) -> TensorImageDataset:
        labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]   # balanced classes
        x = patterns[labels] + 0.3 * torch.randn(n, 1, 16, 16, generator=g)
        return TensorImageDataset((x.clamp(0, 1) * 255).round().to(torch.uint8), labels)

    train, test = make(512), make(256)
    pixels = train.images.double() / 255
    spec = DataSpec("synthetic", 10, 1, (16, 16), (pixels.mean().item(),), (pixels.std().item(),),
                    len(train), len(test), augment_flip=False, crop_padding=0)
    return Data(spec, train, test)


def _load_imagefolder(root: str) -> Data:
    try:
        import torchvision
        from torchvision import transforms
    except ImportError:
        raise McGraphError("data", "imagefolder needs torchvision; pip install torchvision") \
            from None
    base = Path(root)
    test_dir = base / "val" if (base / "val").is_dir() else base / "test"
    if not (base / "train").is_dir() or not test_dir.is_dir():
        raise McGraphError("data", f"imagefolder: {base} must contain train/ and val/ (or test/) "
                                   f"with one subdirectory per class")
    # the default loader converts to RGB; resize to a fixed size so batches stack
    tf = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
    try:
        train = torchvision.datasets.ImageFolder(str(base / "train"), transform=tf)
        test = torchvision.datasets.ImageFolder(str(test_dir), transform=tf)
    except (FileNotFoundError, OSError) as e:
        raise McGraphError("data", f"imagefolder: {e}") from None
    if train.classes != test.classes:
        raise McGraphError("data", f"imagefolder: class folders differ between {base / 'train'} "
                                   f"and {test_dir}")
    spec = DataSpec(f"imagefolder:{root}", len(train.classes), 3, (32, 32), (0.5,) * 3,
                    (0.5,) * 3, len(train), len(test), augment_flip=True, crop_padding=4)
    return Data(spec, train, test)


def load_data(name: str, data_dir: str | None = None) -> Data:
    """Load one of ``DATASETS`` or ``imagefolder:DIR``; failures raise McGraphError."""
    key = name.strip().lower()
    if key.startswith("imagefolder:") or key == "imagefolder":
        root = name.strip().split(":", 1)[1] if ":" in name else ""
        if not (root or data_dir):
            raise McGraphError("data", "imagefolder needs a directory: imagefolder:DIR")
        return _load_imagefolder(root or str(data_dir))
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _load_fashion_mnist(data_dir)
    if key in _CIFAR:
        return _load_cifar(key, data_dir)
    if key == "synthetic":
        return _load_synthetic()
    raise McGraphError("data", f"unknown dataset {name!r}; choose one of "
                               f"{', '.join(DATASETS)} or imagefolder:DIR")


# ---------------------------------------------------------------- loader

def _generator(*keys: int) -> torch.Generator:
    # SeedSequence mixes the keys well: (seed, epoch) pairs never collide like seed+epoch would
    state = np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def augment_batch(x: torch.Tensor, spec: DataSpec, g: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``spec.crop_padding``) and optional horizontal flip, per sample."""
    b, c, h, w = x.shape
    p = spec.crop_padding
    if p > 0:
        padded = x.new_zeros(b, c, h + 2 * p, w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = x
        dy, dx = (torch.randint(0, 2 * p + 1, (2, b), generator=g)).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if spec.augment_flip:
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x


class Loader:
    """Iterable of ``(x, y)`` batches for one rank and one epoch; ``len()`` = batches per rank.

    Iterating twice yields the same batches (the generators are re-seeded per iteration).
    """

    def __init__(self, data: Data, split: str, batch_size: int, *, shuffle: bool, augment: bool,
                 seed: int, epoch: int, drop_last: bool, rank: int, world_size: int,
                 device: str | torch.device, max_samples: int | None):
        if split not in ("train", "val", "test"):
            raise McGraphError("data", f"split must be 'train', 'val' or 'test', got {split!r}")
        if getattr(data, split) is None:
            raise McGraphError("data", f"{data.spec.name} has no {split} split")
        if batch_size < 1:
            raise McGraphError("data", f"batch size must be >= 1, got {batch_size}")
        if max_samples is not None and max_samples < 1:
            raise McGraphError("data", f"the sample limit must be >= 1, got {max_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise McGraphError("data", f"rank {rank} is not in 0..{world_size - 1}")
        self.spec, self.dataset = data.spec, getattr(data, split)
        n = len(self.dataset) if max_samples is None else min(len(self.dataset), max_samples)
        if n == 0:
            raise McGraphError("data", f"{data.spec.name} {split} split is empty")
        self.num_total, self.batch_size = n, batch_size
        self.shuffle, self.augment = shuffle, augment
        self.seed, self.epoch, self.drop_last = seed, epoch, drop_last
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        # every rank must see the same number of batches or collectives deadlock: truncate
        # with drop_last, else wrap around (as DistributedSampler does)
        self.num_samples = n // world_size if drop_last else math.ceil(n / world_size)
        if self.num_samples == 0:
            raise McGraphError("data", f"{n} samples cannot be split over {world_size} ranks")
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size if self.drop_last
                else math.ceil(self.num_samples / self.batch_size))

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for this epoch, in iteration order."""
        n = self.num_total
        order = (torch.randperm(n, generator=_generator(self.seed, self.epoch, 0))
                 if self.shuffle else torch.arange(n))
        total = self.num_samples * self.world_size
        order = order[:total] if total <= n else torch.cat([order, order[:total - n]])
        return order[self.rank::self.world_size]

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = list(self.indices().split(self.batch_size))[:len(self)]
        if isinstance(self.dataset, TensorImageDataset):
            for idx in chunks:
                yield self.dataset.images[idx], self.dataset.labels[idx]
        else:  # lazily decoded datasets (ImageFolder): collate with a DataLoader, in-process
            yield from DataLoader(self.dataset, batch_sampler=[c.tolist() for c in chunks],
                                  num_workers=0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = _generator(self.seed, self.epoch, 1, self.rank)   # per-rank augmentation stream
        non_blocking = self.device.type == "cuda"
        for x, y in self._batches():
            x = x.to(self.device, non_blocking=non_blocking)  # move uint8: 4x less traffic
            if self.augment:
                x = augment_batch(x, self.spec, g)
            x = (x.float() / 255 - self.mean) / self.std
            yield x, y.to(self.device, dtype=torch.int64, non_blocking=non_blocking)


def make_loader(data: Data, split: str, batch_size: int, *, shuffle: bool, augment: bool,
                seed: int = 0, epoch: int = 0, drop_last: bool = False,
                rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                max_samples: int | None = None) -> Loader:
    """Batches of ``split`` for ``rank`` of ``world_size``; see ``Loader``."""
    return Loader(data, split, batch_size, shuffle=shuffle, augment=augment, seed=seed,
                  epoch=epoch, drop_last=drop_last, rank=rank, world_size=world_size,
                  device=device, max_samples=max_samples)
