"""Classify images with an mcgraph ONNX file alone: onnxruntime, numpy and Pillow, no torch.

    python examples/deploy.py model.onnx photos/ shoe.png       # files or folders of images
    python examples/deploy.py model.onnx imgs/ --device cpu --batch-size 64

The file says how to feed it (docs/onnx-contract.md): input size and channels, the training data's
mean and std, the class names. int8 or fp16 files run unchanged (float32 in and out, same keys):
    mcgraph compile run/best.pt --precision int8 --data fashion-mnist -o model-int8.onnx
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("model")
p.add_argument("images", nargs="+", help="image files, or folders of them")
p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
p.add_argument("--batch-size", type=int, default=32)
args = p.parse_args()

cuda = args.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers()
if args.device == "cuda" and not cuda:
    sys.exit("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
if cuda and hasattr(ort, "preload_dlls"):
    ort.preload_dlls()           # the CUDA/cuDNN libraries of the nvidia pip wheels, if present
sess = ort.InferenceSession(args.model, providers=(["CUDAExecutionProvider"] if cuda else [])
                            + ["CPUExecutionProvider"])
meta = {k.removeprefix("mcgraph."): json.loads(v) if v[:1] in "[{" else v
        for k, v in sess.get_modelmeta().custom_metadata_map.items() if k.startswith("mcgraph.")}
if "mean" not in meta:           # a rewrite that never saw data: its normalization is unknown
    sys.exit(f"{args.model} records no normalization: compile a checkpoint of `mcgraph train`, "
             "or export with mcgraph.export_onnx(..., data=...)")
h, w = meta["input_size"]
c = int(meta["input_channels"])
mean = np.array(meta["mean"], np.float32).reshape(1, -1, 1, 1)
std = np.array(meta["std"], np.float32).reshape(1, -1, 1, 1)
classes = int(meta.get("num_classes") or sess.get_outputs()[0].shape[1])
names = meta.get("class_names") or [f"class {i}" for i in range(classes)]

files = sorted(f for a in map(Path, args.images) for f in (a.iterdir() if a.is_dir() else [a])
               if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
if not files:
    sys.exit("no images found")


def load(f):
    # what the training loader saw: 8-bit pixels at the model's size (resized bilinearly, as
    # mcgraph's image-folder loader does), then (pixel / 255 - mean) / std per channel
    img = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    return np.asarray(img, np.float32).reshape(h, w, c).transpose(2, 0, 1) / 255


def logits(x):
    if not cuda:
        return sess.run(["logits"], {"input": x})[0]
    # IOBinding: the batch is copied to the GPU once and the output read back once
    binding = sess.io_binding()
    binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    binding.bind_output("logits", "cuda")
    sess.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


print(f"{args.model}: {c}x{h}x{w} input, {len(names)} classes, {sess.get_providers()[0]}")
for i in range(0, len(files), args.batch_size):     # the batch axis is dynamic
    chunk = files[i:i + args.batch_size]
    x = (np.stack([load(f) for f in chunk]) - mean) / std
    out = logits(np.ascontiguousarray(x, np.float32))
    prob = np.exp(out - out.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    for f, row in zip(chunk, prob):
        k = int(row.argmax())                        # ties: the first index, as the contract says
        print(f"{f.name}: {names[k]} ({row[k]:.0%})")
