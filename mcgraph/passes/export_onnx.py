"""The export pass lives in :mod:`mcgraph.export` (it writes the file's metadata too); this module
keeps ``from mcgraph.passes import export_onnx`` and ``mcgraph.passes.export_onnx`` working."""
from ..export import DEFAULT_OPSET, PASS, export_onnx, read_metadata

__all__ = ["DEFAULT_OPSET", "PASS", "export_onnx", "read_metadata"]
