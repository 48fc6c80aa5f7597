"""`dlkdd export OUT.onnx`: the student as ONNX, for onnxruntime and edge runtimes.

The graph takes pixel / 255 clips, (batch, 3, T, crop, crop) float32 with a dynamic batch,
and applies the model's input statistics inside (so a user cannot forget them), and returns
logits. The file's metadata carries what a user needs: `classes` (JSON list), `normalize`
(JSON {"mean", "std"} in [0, 1] pixel units, or null: already inside the graph, stored for
reference) and `dlkdd` (the full input spec, as in the TorchScript export's meta.json).
Needs the `onnx` extra: `pip install 'dlkdd[onnx]'` (onnx and onnxruntime).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..engine import atomic
from .predict import export_meta, load_student

INPUT, OUTPUT = "clip", "logits"
OPSET = 17


class ExportError(UserError, RuntimeError):
    """An export that cannot be made or does not match the model (one line)."""


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"ONNX export needs {module}: pip install 'dlkdd[onnx]'") from None


def onnx_metadata(meta: dict, T: int) -> dict[str, str]:
    """String key/value pairs stored in the ONNX file (onnxruntime: custom_metadata_map)."""
    spec = export_meta(meta, T)
    return {"classes": json.dumps(spec["classes"]), "normalize": json.dumps(spec["normalize"]),
            "dlkdd": json.dumps(spec)}


def _write_graph(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The legacy (TorchScript-based) exporter: it needs no onnxscript and keeps the batch free."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # its deprecation notice, tracer notes on constant shapes
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = _need("onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def check_onnx(path, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |logits difference| between onnxruntime running `path` and `model` on `x`."""
    ort = _need("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy().astype(np.float32)})[0]
    with torch.inference_mode():
        want = model(x).float().numpy()
    return float(np.abs(got - want).max())


def export_onnx(student_dir, out_path, example_T: int | None = None) -> Path:
    """Write the student (input statistics inside) as ONNX; checked with onnxruntime against the
    PyTorch model on batches of 1 and 3 before it replaces `out_path`."""
    _need("onnx"), _need("onnxruntime")
    model, meta = load_student(student_dir, "cpu")
    T, crop = int(example_T or meta["frames"]), int(meta["crop"])
    g = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, T, crop, crop, generator=g)
    out_path = Path(out_path)
    with atomic.atomic_path(out_path) as tmp:
        _write_graph(model, example, tmp)
        _add_metadata(tmp, onnx_metadata(meta, T))
        for n in (1, 3):  # other batch sizes than the traced one: the batch axis is really free
            diff = check_onnx(tmp, model, torch.rand(n, 3, T, crop, crop, generator=g))
            if not diff <= 1e-4:
                raise ExportError(f"{out_path}: ONNX output differs from the student by {diff:.3g}; not written")
    return out_path


def read_onnx_metadata(path) -> dict:
    """The metadata stored by `export_onnx`, decoded: {"classes", "normalize", "dlkdd"}."""
    ort = _need("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
