"""enhance.workers = auto: in this process where a LocalCluster would get fewer than two workers or
the work is small; dask above that; 0 and N still force either path; the path is in no fingerprint."""
import pytest
from rich.console import Console
from videofix import make_video_dataset

from dlkdd.pipeline.config import Config, ConfigError, build_config, load_toml, set_value, validate
from dlkdd.pipeline.engine.run import execute
from dlkdd.pipeline.stages.enhancing import cluster, plan
from dlkdd.pipeline.stages.enhancing.plan import cluster_workers
from dlkdd.pipeline.stages.enhancing.task import process_videos
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_video_dataset(tmp_path_factory.mktemp("videos"), classes=2, train=3, test=1, frames=10)


def small_config(root, **overrides) -> Config:
    cfg = Config()
    values = {"data.root": str(root), "data.frames": 6, "data.short_side": 32, "data.crop": 24,
              "data.test_clips": 2, "enhancer.kind": "gamma", "enhance.shard_size": 4, **overrides}
    for k, v in values.items():
        set_value(cfg, k, v)
    return cfg


def test_auto_is_the_default_and_counts_workers_from_the_cores():
    cfg = Config()
    assert cfg.enhance.workers == "auto" and cfg.enhance.threads_per_worker == 2
    # this process keeps threads_per_worker + 1 cores busy: one worker beside it only loses
    assert [cluster_workers(cfg.enhance, cores) for cores in (1, 2, 4, 5, 8, 16, 64)] == [0, 0, 0, 2, 3, 7, 8]
    cfg.enhance.threads_per_worker = 1
    assert cluster_workers(cfg.enhance, 2) == 0 and cluster_workers(cfg.enhance, 3) == 2
    for forced in (0, 1, 3):
        cfg.enhance.workers = forced
        assert cluster_workers(cfg.enhance, 64) == forced  # a number is used as given


@pytest.mark.parametrize("text, value", [("auto", "auto"), (" auto ", "auto"), ("0", 0), ("3", 3)])
def test_set_takes_auto_or_a_count(text, value):
    cfg = build_config(None, [f"enhance.workers={text}"])
    validate(cfg)
    assert cfg.enhance.workers == value and type(cfg.enhance.workers) is type(value)


@pytest.mark.parametrize("toml, message", [
    ("workers = 2", None), ('workers = "auto"', None), ('workers = "4"', None),
    ("workers = -1", "enhance.workers: must be >= 0, got -1"),
    ('workers = "many"', "enhance.workers: 'many' is not auto or a number of workers"),
    ("workers = true", "enhance.workers: expected str or int, got True"),
    ("workers = 1.5", "enhance.workers: expected str or int, got 1.5"),
])
def test_a_config_file_takes_auto_or_a_count_and_names_what_is_wrong(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(f"[enhance]\n{toml}\n")
    cfg = Config()
    if message is None:
        load_toml(cfg, path)
        validate(cfg)
        assert cfg.enhance.workers in ("auto", 2, 4)
        return
    with pytest.raises(ConfigError) as e:
        load_toml(cfg, path)
        validate(cfg)
    assert message in str(e.value)


def test_the_path_is_in_no_fingerprint():
    speed = {"enhance.workers", "enhance.cluster_after", "enhance.scheduler", "enhance.batch_frames"}
    for stage in ("enhance", "pretrain"):  # pretrain makes its footage's clips with the same machinery
        params = STAGES[stage].param_values(Config())
        assert not speed & set(params), stage
    # what decides the bytes is: the enhancer's arithmetic, and torch's thread count (its float sums)
    assert {"enhance.precision", "enhance.threads_per_worker"} <= set(STAGES["enhance"].param_values(Config()))


def test_auto_on_two_cores_never_starts_dask_even_when_told_to_start_at_once(videos, tmp_path, monkeypatch):
    def no_cluster(*a, **k):
        raise AssertionError("auto started a LocalCluster on a machine where one worker only loses")
    monkeypatch.setattr(cluster, "Cluster", no_cluster)
    monkeypatch.setattr(plan, "machine_cores", lambda: 2)
    cfg = small_config(videos, **{"enhance.cluster_after": 0})
    assert execute(pipeline_graph(cfg, tmp_path), "enhance", "cpu", Console(quiet=True)) == ["enhancer", "enhance"]
    assert len(sorted((tmp_path / "clips").glob("shard-*.h5"))) == 4


def test_auto_with_cores_to_spare_and_work_left_goes_to_dask_and_a_count_forces_it(videos, tmp_path, monkeypatch):
    asked = []

    def fake_cluster(it, workers, scheduler, args, threads):
        asked.append(workers)
        for task in it:  # the tasks a cluster would get, done here
            yield from process_videos(task, **args)
    monkeypatch.setattr(cluster, "run_on_cluster", fake_cluster)
    monkeypatch.setattr(plan, "machine_cores", lambda: 16)
    cfg = small_config(videos, **{"enhance.cluster_after": 0})  # no small-job threshold: straight to dask
    execute(pipeline_graph(cfg, tmp_path / "auto16"), "enhance", "cpu", Console(quiet=True))
    monkeypatch.setattr(plan, "machine_cores", lambda: 2)
    cfg = small_config(videos, **{"enhance.cluster_after": 0, "enhance.workers": 1})
    execute(pipeline_graph(cfg, tmp_path / "forced"), "enhance", "cpu", Console(quiet=True))
    assert asked == [7, 1]  # 16 cores: (16 - 1) // 2 workers; 1 forced on 2 cores
    for name in ("auto16", "forced"):
        assert len(sorted((tmp_path / name / "clips").glob("shard-*.h5"))) == 4
