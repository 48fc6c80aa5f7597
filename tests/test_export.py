"""TorchScript export holds no device: it runs wherever the user moves it."""
from __future__ import annotations

import re

import pytest
import torch

from dlkdd import models
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.views import normalize
from dlkdd.pipeline.inference.predict import export_student
from dlkdd.pipeline.names import MODEL
from dlkdd.pipeline.training.checkpoints import write_meta

STATS = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.4, 0.3]}


def _student(folder, name: str, stats: dict | None) -> torch.nn.Module:
    """A trained-model folder as the training stages leave it (without training)."""
    torch.manual_seed(0)
    model = models.build(name, 3).eval()
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": {}, "fingerprint": "x", "epoch": 1, "metrics": {}},
               folder / MODEL)
    write_meta(folder, model_name=name, num_classes=3, classes=["a", "b", "c"], input="original",
               data_cfg=DataConfig(frames=4, short_side=16, crop=16), H=16, W=16,
               extra={"normalize": stats} if stats else None)
    return model


def _all_code(module: torch.jit.ScriptModule) -> str:
    """The TorchScript code of the module and every submodule, and the frozen constants of traced ones."""
    parts = []
    for m in [module, *module.modules()]:
        for attr in ("code", "graph"):
            try:
                parts.append(str(getattr(m, attr)))
            except (RuntimeError, AttributeError):
                pass
    return "\n".join(parts)


@pytest.mark.parametrize("name, stats", [("r3d_tiny", STATS), ("r3d_tiny", None), ("r2plus1d_small_bert", STATS)])
def test_torchscript_export_has_no_device_constant_and_follows_to(tmp_path, name, stats):
    model = _student(tmp_path / "student", name, stats)
    out = export_student(tmp_path / "student", tmp_path / "student.ts")
    loaded = torch.jit.load(str(out))
    code = _all_code(loaded)
    # no device constant anywhere in the exported graph (a traced torch.as_tensor records one)
    assert not re.search(r": Device = prim::Constant|torch\.device\(", code), code
    x = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(normalize(x, stats))
        assert (loaded(x) - want).abs().max() < 1e-5
        # .to() moves the statistics with the module: it runs in float64 as it would on another device
        moved = loaded.to(torch.float64)
        assert moved(x.double()).dtype == torch.float64
        assert (moved(x.double()).float() - want).abs().max() < 1e-4
