"""The distillation loss, the student's view-aligned soft labels, and the student/baseline stages."""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from dlkdd.pipeline.config import Config
from dlkdd.pipeline.datasets.clips import draw_view
from dlkdd.pipeline.datasets.shards import ShardError, read_clip
from dlkdd.pipeline.datasets.views import apply_view, normalize, view_params
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.stages.student import run_baseline, run_student, student_datasets
from dlkdd.pipeline.stages.table import list_variants, pipeline_graph
from dlkdd.pipeline.training.checkpoints import load_trained
from dlkdd.pipeline.training.distill import distillation_loss, make_loss_fn
from tests.cachefix import make_clip_cache

V, K = 3, 3


# --------------------------------------------------------------------------------- the loss

def _batch(B=6, K=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, generator=g, dtype=dtype) * 3, torch.randint(0, K, (B,), generator=g),
            torch.randn(B, K, generator=g, dtype=dtype) * 3)


def test_alpha_zero_is_exactly_cross_entropy():
    z_s, y, z_t = _batch()
    assert torch.equal(distillation_loss(z_s, y, z_t, 0.0, 4.0), F.cross_entropy(z_s, y))
    assert torch.equal(make_loss_fn(0.0, 4.0)(z_s, y, z_t), F.cross_entropy(z_s, y))


def test_alpha_one_is_scaled_kl():
    z_s, y, z_t = _batch()
    T = 3.0
    p_t = F.softmax(z_t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(z_s / T, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(z_s, y, z_t, 1.0, T), T * T * kl, atol=1e-6)
    # the same teacher and student: nothing to learn
    assert distillation_loss(z_s, y, z_s.clone(), 1.0, T).abs() < 1e-6


@pytest.mark.parametrize("alpha,T", [(0.0, 4.0), (0.3, 1.0), (0.5, 4.0), (0.9, 2.5), (1.0, 8.0)])
def test_gradient_matches_closed_form(alpha, T):
    z_s, y, z_t = _batch(B=7, K=6, dtype=torch.float64, seed=1)
    z_s.requires_grad_(True)
    distillation_loss(z_s, y, z_t, alpha, T).backward()
    B = z_s.shape[0]
    with torch.no_grad():
        onehot = F.one_hot(y, z_s.shape[1]).double()
        want = ((1 - alpha) * (F.softmax(z_s, 1) - onehot) / B
                + alpha * T * (F.softmax(z_s / T, 1) - F.softmax(z_t / T, 1)) / B)
    assert z_s.grad.dtype == torch.float64
    assert (z_s.grad - want).abs().max() < 1e-6


def test_nan_teacher_cannot_leak_into_alpha_zero():
    z_s, y, _ = _batch()
    bad = torch.full_like(z_s, float("nan"))
    bad[0, 0] = float("inf")
    z_s.requires_grad_(True)
    loss = make_loss_fn(0.0, 4.0)(z_s, y, bad)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()


def test_teacher_is_a_constant():
    z_s, y, z_t = _batch()
    z_t.requires_grad_(True)
    distillation_loss(z_s.requires_grad_(True), y, z_t, 0.5, 4.0).backward()
    assert z_t.grad is None


# --------------------------------------------------------------------------------- the stages

def tiny_config(alpha=0.5, epochs=2):
    cfg = Config()
    cfg.data.frames, cfg.data.crop, cfg.data.views = 4, 16, V
    s = cfg.student
    s.model, s.epochs, s.batch_size, s.lr, s.alpha, s.temperature = "r3d_tiny", epochs, 6, 0.01, alpha, 4.0
    return cfg


def fake_logits(n, views=V, fill=None):
    """logits[c, v] = (c, v, 10c + v): each row says which (clip, view) it belongs to."""
    c, v = np.meshgrid(np.arange(n), np.arange(views), indexing="ij")
    out = np.stack([c, v, 10 * c + v], axis=-1).astype(np.float32)
    return out if fill is None else np.full_like(out, fill)


def write_logits(path, logits, **attrs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("logits", data=logits)
        for k, val in {"views": logits.shape[1], **attrs}.items():
            f.attrs[k] = val
    return path


def make_ctx(tmp_path, cfg, stage="student", index=None):
    graph = pipeline_graph(cfg, tmp_path)
    clips = graph.out_dir("enhance")
    if not (clips / "index.json").exists():
        index = make_clip_cache(clips, classes=K, train_per_class=4, test_per_class=1, T=4, H=20, W=24)
    out = graph.out_dir(stage)
    out.mkdir(parents=True, exist_ok=True)
    return Context(graph, stage, out, "cpu", Console(quiet=True)), index


def test_student_sees_the_logits_of_the_view_it_was_given(tmp_path):
    cfg = tiny_config()
    ctx, index = make_ctx(tmp_path, cfg)
    n = len(index["clips"])
    train_set, val_set = student_datasets(ctx, fake_logits(n))
    by_id = {c["id"]: c for c in index["clips"]}
    seen_views = set()
    for epoch in range(3):
        train_set.set_epoch(epoch)
        for i in range(0, len(train_set), 3):
            windows, y, extra = train_set[i]
            assert windows.pixels.shape == (4, 20, 20, 3)  # the short-side square that holds the box
            x = train_set.view_maker.one(windows)  # made as the loop makes it on the device
            cid = train_set.clips.clip_ids[i]
            c, v, code = extra.tolist()
            assert (c, code) == (cid, 10 * cid + v)
            assert v == draw_view(cfg.student.seed, epoch, cid, V)
            meta = by_id[cid]
            assert meta["split"] == "train" and y == meta["label"]
            clip = read_clip(ctx.dir_of("enhance") / meta["shard"], meta["row"], "original")
            want = apply_view(clip, view_params(cid, int(v), 20, 24, cfg.data), cfg.data.crop)
            torch.testing.assert_close(x, normalize(want, train_set.stats), rtol=0, atol=1e-5)
            seen_views.add(int(v))
    assert seen_views == set(range(V))  # random views really are drawn, not only the centre crop
    windows, y, _ = val_set[0]
    x = val_set.view_maker.one(windows)
    cid = val_set.clips.clip_ids[0]
    meta = by_id[cid]
    assert meta["split"] == "val"  # validation is carved from train; test belongs to evaluate alone
    clip = read_clip(ctx.dir_of("enhance") / meta["shard"], meta["row"], "original")
    want = apply_view(clip, view_params(cid, 0, 20, 24, cfg.data), cfg.data.crop)
    torch.testing.assert_close(x, normalize(want, json.loads((ctx.dir_of("enhance") / "index.json").read_text())
                                            ["normalize"]["original"]), rtol=0, atol=1e-5)


def _record(ctx, summary):
    ctx.graph.write_record(ctx.name, ctx.graph.inspect(ctx.name), time.time(), summary)


def test_student_and_baseline_train_and_alpha_zero_equals_baseline(tmp_path):
    base_ctx, index = make_ctx(tmp_path, tiny_config(alpha=0.0), stage="baseline")
    n = len(index["clips"])
    # NaN teacher logits: with alpha = 0 not one of them may reach the weights
    write_logits(base_ctx.dir_of("soft-labels") / "logits.h5", fake_logits(n, fill=np.nan))
    s0_ctx, _ = make_ctx(tmp_path, tiny_config(alpha=0.0))
    s0 = run_student(s0_ctx)
    b = run_baseline(base_ctx)
    for out in (s0_ctx.out, base_ctx.out):
        assert (out / "model.pt").exists() and (out / "meta.json").exists()
    m0, meta0 = load_trained(s0_ctx.out)
    mb, metab = load_trained(base_ctx.out)
    sd0, sdb = m0.state_dict(), mb.state_dict()
    assert sd0.keys() == sdb.keys() and all(torch.equal(sd0[k], sdb[k]) for k in sd0)
    assert meta0["input"] == metab["input"] == "original"
    assert meta0["alpha"] == 0.0 and meta0["variant"] == s0_ctx.out.name
    assert metab["alpha"] == 0.0 and metab["temperature"] is None and metab["variant"] == "baseline"
    assert s0["top1"] == b["top1"] and s0["epochs"] == 2 and s0["params"] == meta0["params"] > 0
    assert {"top1", "top5", "alpha", "temperature", "params", "gflops_per_clip", "clips_per_s"} <= set(s0)
    _record(s0_ctx, s0)

    # a distilled variant next to it, in its own folder
    write_logits(base_ctx.dir_of("soft-labels") / "logits.h5", fake_logits(n))
    s5_ctx, _ = make_ctx(tmp_path, tiny_config(alpha=0.5, epochs=1))
    assert s5_ctx.out != s0_ctx.out
    s5 = run_student(s5_ctx)
    m5, meta5 = load_trained(s5_ctx.out)
    assert meta5["alpha"] == 0.5 and meta5["temperature"] == 4.0
    assert not all(torch.equal(v, sd0[k]) for k, v in m5.state_dict().items())
    _record(s5_ctx, s5)
    again = run_student(s5_ctx)  # resumes from the finished checkpoint: nothing left to train
    assert again["epochs_run"] == 0

    rows = list_variants(tmp_path)
    assert [r["variant"] for r in rows] == [s0_ctx.out.name, s5_ctx.out.name]
    assert [(r["alpha"], r["temperature"]) for r in rows] == [(0.0, 4.0), (0.5, 4.0)]
    assert rows[1]["top1"] == s5["top1"] and rows[0]["started"] <= rows[1]["started"]


def test_logits_made_for_other_views_are_one_line_errors(tmp_path):
    cfg = tiny_config()
    ctx, index = make_ctx(tmp_path, cfg)
    n = len(index["clips"])
    path = ctx.dir_of("soft-labels") / "logits.h5"
    for logits, attrs, words in [(fake_logits(n), {"views": V + 1}, "data.views"),
                                 (fake_logits(n, views=V + 1), {}, "data.views"),
                                 (fake_logits(n), {"view_seed": 7}, "data.view_seed"),
                                 (fake_logits(n - 1), {}, "clip index"),
                                 (fake_logits(n)[..., :2], {}, "classes"),
                                 (fake_logits(n), {"classes": json.dumps(["a", "b", "c"])}, "classes")]:
        write_logits(path, logits, **attrs)
        with pytest.raises(ShardError) as e:
            run_student(ctx)
        msg = str(e.value)
        assert str(path) in msg and words in msg and "\n" not in msg
    write_logits(path, fake_logits(n, fill=np.nan))
    with pytest.raises(ShardError, match="NaN"):
        run_student(ctx)
    path.unlink()
    with pytest.raises(ShardError, match="soft labels missing"):
        run_student(ctx)
    assert not (ctx.out / "model.pt").exists()


def test_list_variants_of_an_empty_cache(tmp_path):
    assert list_variants(tmp_path) == []
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "student@a1-T2-deadbeef.json").write_text("{not json")
    (tmp_path / "stages" / "teacher.json").write_text(json.dumps({"summary": {}}))
    rows = list_variants(tmp_path)
    assert [r["variant"] for r in rows] == ["a1-T2-deadbeef"] and rows[0]["top1"] is None
