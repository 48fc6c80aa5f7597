"""`dlkdd`: the command line. Thin: options -> config -> one package call -> print.

Each stage verb brings its stage and everything upstream of it up to date,
rerunning only what is stale (like `make target`), and says why it reruns.
`--help`, `status` and `--dry-run` load no torch: the verbs that use models import
their package module when they run.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path

import click

from .errors import UserError, os_error_line, user_message
from .pipeline.engine import signals
from .pipeline.engine.progress import make_console
from .pipeline.engine.status_view import print_status
from .pipeline.stages.run import cache_status, pick_device, resolve_config, run_target
from .pipeline.stages.table import STAGES, pipeline_graph


class Group(click.Group):
    """Turns user errors into one-line messages and Ctrl-C or SIGTERM into a resumable stop."""

    def invoke(self, ctx: click.Context):
        try:
            with signals.handled():  # SIGTERM (a scheduler's stop) takes the Ctrl-C path below
                return super().invoke(ctx)
        except KeyboardInterrupt as e:
            signals.quiet_helper_threads()
            click.echo(f"\n{signals.describe(e)}: finished shards, checkpoints and records were kept; "
                       "run the same command again to resume", err=True)
            sys.exit(signals.exit_code(e))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - narrowed just below
            if isinstance(e, UserError):
                raise click.ClickException(user_message(e)) from None
            if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
                raise click.ClickException(os_error_line(e)) from None
            raise


# A full or read-only disk, a missing permission: the machine's state, not a bug in dlkdd.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.ENOTDIR, errno.EISDIR, errno.EIO}


class Settings:
    """The global options, handed to every verb."""

    def __init__(self, config_file, overrides, data, cache, device, seed):
        self.skip_missing = False  # set by a verb's --skip-missing
        self.config_file = config_file
        self.overrides = list(overrides)
        self.data = data
        self.cache = Path(cache)
        self.device_opt = device
        self.seed = seed

    def config(self):
        return resolve_config(self.config_file, self.overrides, self.data, self.seed, self.skip_missing)

    def device(self) -> str:
        return pick_device(self.device_opt)

    def graph(self, checksum: bool = False):
        return pipeline_graph(self.config(), self.cache, checksum=checksum)

    def run(self, target: str, **flags) -> list[str]:
        """Bring `target` and its upstream up to date (the device is resolved only if a stage runs)."""
        return run_target(self.config(), self.cache, target, self.device_opt, make_console(), **flags)


# One run is one draw of every seed, and float results differ across CPUs: what `run` prints is an
# example; a result is a study's mean +- sd over seeds with its paired interval.
ONE_SEED_NOTE = ("one seed, so this table is a demonstration, not a result: `dlkdd study --seeds 0,1,2,3,4` gives "
                 "mean +- sd over seeds and the student - baseline difference with its 95 % CI")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of config values, one [section] per stage (see README).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set student.alpha=0.7 (repeatable).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Dataset root (split lists and videos). Default: the bundled sample in data/sample.")
@click.option("--cache", default="dlkdd-cache", envvar="DLKDD_CACHE", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder for clips, logits, checkpoints and reports (env DLKDD_CACHE).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run models: auto uses CUDA when torch sees a GPU.")
@click.option("--seed", type=int, default=None,
              help="Set every seed (pretrain, enhancer, views, teacher, student) at once.")
@click.option("-v", "--verbose", is_flag=True, help="Debug output (e.g. videos shorter than a clip).")
@click.pass_context
def cli(ctx, config_file, overrides, data, cache, device, seed, verbose):
    """dlkdd: Dual-Light Knowledge Distillation for action recognition in dark video.

    A teacher learns from Zero-DCE-enhanced clips, a lightweight student learns from the
    original dark clips and the teacher's cached soft labels; only the student runs at
    inference. Every stage verb reruns only the stages that are stale.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # matplotlib (plots, previews) keeps a font cache: in the cache, not in the user's home
    if "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = str(Path(cache).absolute() / ".matplotlib")
        ctx.call_on_close(lambda: os.environ.pop("MPLCONFIGDIR", None))  # for in-process callers
    ctx.obj = Settings(config_file, overrides, data, cache, device, seed)


def _stage_options(func):
    """The options every stage verb (and `run`) shares."""
    for opt in reversed([
        click.option("--force", is_flag=True, help="Rerun the named stage even if it is fresh "
                     "(upstream stages only if they are stale)."),
        click.option("--dry-run", is_flag=True, help="Say what would run and why; run nothing."),
        click.option("--wait", type=float, default=0.0, show_default=True,
                     help="Seconds to wait for another dlkdd process to release an output it needs."),
        click.option("--checksum", is_flag=True,
                     help="Fingerprint videos by content (sha256) instead of size and mtime."),
        click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                     help="enhance: address of an existing dask scheduler (env DASK_SCHEDULER_ADDRESS)."),
        click.option("--strict", is_flag=True, help="enhance: fail on the first unreadable video."),
        click.option("--skip-missing", is_flag=True, help="Go on without listed videos that are not on "
                     "disk (listed in clips/errors.json) instead of failing (data.skip_missing)."),
    ]):
        func = opt(func)
    return func


def _stage_command(name: str):
    @_stage_options
    @click.pass_obj
    def command(settings: Settings, force, dry_run, wait, checksum, scheduler, strict, skip_missing, **extra):
        settings.skip_missing = skip_missing
        settings.run(name, force=force, dry_run=dry_run, wait=wait, checksum=checksum,
                     options={"scheduler": scheduler, "strict": strict})
        if extra.get("verify") and not dry_run:
            from .pipeline.stages.soft_labels import verify_cache  # deferred: loads torch
            n = verify_cache(settings.graph(), settings.device(), extra["verify"], console=make_console())
            click.echo(f"verified {n} cached (clip, view) logits against the teacher: all within 1e-4")
    command.__doc__ = STAGES[name].doc + " Brings every upstream stage up to date first."
    if name == "soft-labels":
        command = click.option("--verify", type=int, default=0, metavar="K",
                               help="Afterwards recompute K random (clip, view) entries with the "
                                    "teacher; fail if any differs by more than 1e-4.")(command)
    return cli.command(name=name)(command)


for _name in STAGES:
    _stage_command(_name)


@cli.command()
@_stage_options
@click.pass_obj
def run(settings: Settings, force, dry_run, wait, checksum, scheduler, strict, skip_missing):
    """Run the whole pipeline (enhancer -> enhance -> teacher -> soft-labels -> baseline ->
    student -> evaluate), only the stale stages, and print the report table."""
    settings.skip_missing = skip_missing
    settings.run("evaluate", force=force, dry_run=dry_run, wait=wait, checksum=checksum,
                 options={"scheduler": scheduler, "strict": strict})
    if not dry_run:
        report = settings.cache / "report" / "results.md"
        if report.exists():  # the table as plain markdown: it reads the same in a log or a pipe
            click.echo(report.read_text().split("\n## ", 1)[0].rstrip())
            click.echo(f"\nfull report: {report}")
            click.echo(ONE_SEED_NOTE)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--verify", is_flag=True, help="Re-hash every output against its record (slow, thorough).")
@click.option("--checksum", is_flag=True, help="Fingerprint videos by content instead of size and mtime.")
@click.option("--skip-missing", is_flag=True, help="Listed videos not on disk are not an error (as for the run).")
@click.pass_obj
def status(settings: Settings, as_json, verify, checksum, skip_missing):
    """Show each stage as fresh, stale or missing, with the reason."""
    settings.skip_missing = skip_missing
    state = cache_status(settings.config(), settings.cache, checksum=checksum, verify=verify)
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        print_status(settings.cache, state, sys.stdout.isatty())


SAMPLE_ONLY = ("videos_per_class", "test_per_class", "day_videos_per_class", "day_test_per_class")
LIKE_ONLY = ("recordings_per_class", "clips_per_recording")


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--like", type=click.Choice(["sample", "arid", "dark48"]), default="sample", show_default=True,
              help="sample: the bundled sample's layout (square .mp4, splits/, classes.txt, a day/ set). arid: "
                   "ARID v1.0's (320x240 MPEG-4 .avi at 30 fps, Class/Class_A_B.avi, list_cvt/ARID_split{1,2,3}_"
                   "{train,test}.txt). dark48: Dark-48's naming (Class/<youtube-id>_N.mp4, MMAction2 lists).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: same seed, same bytes.")
@click.option("--classes", type=int, default=None,
              help="Number of action classes [default: 6; arid: ARID's 11; dark48: 6, at most 11: Dark-48 has "
                   "48 classes, the generator draws 11 motions].")
@click.option("--videos-per-class", type=int, default=None, help="sample: dark videos per class [default: 47].")
@click.option("--test-per-class", type=int, default=None,
              help="sample: dark videos per class in the test split [default: 17].")
@click.option("--day-videos-per-class", type=int, default=None,
              help="sample: normal-light videos per class, in OUT_DIR/day (0 = no day set) [default: 50].")
@click.option("--day-test-per-class", type=int, default=None,
              help="sample: normal-light videos per class in the day set's test split [default: 10].")
@click.option("--recordings-per-class", type=int, default=None,
              help="arid: recordings (Class_A) per class, at least 3, each split tests another; dark48: YouTube "
                   "videos per class, a quarter of them test [default: 4].")
@click.option("--clips-per-recording", type=int, default=None,
              help="arid: clips cut from each recording (Class_A_B); dark48: clips per YouTube video "
                   "(<youtube-id>_N) [default: 2].")
@click.option("--size", type=int, default=None,
              help="Frame size in pixels, even [default: 64, square; arid: 240 rows at 4:3 (320x240); "
                   "dark48: 180 rows at 16:9 (320x180)].")
def sample(out_dir, like, seed, size, **counts):
    """Generate the synthetic dark-action sample (ARID-format lists) into OUT_DIR, and its
    normal-light counterpart (other scenes, same classes) into OUT_DIR/day; or, with --like,
    dark data shaped like ARID or Dark-48 (their frame size, container, naming and split lists;
    no day set). A few MB at the default sizes."""
    from .pipeline.datasets.sample import make_like  # deferred: loads numpy and decord
    given = {k: v for k, v in counts.items() if v is not None}
    wrong = [k for k in (LIKE_ONLY if like == "sample" else SAMPLE_ONLY) if k in given]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise click.UsageError(f"{flags}: not an option of --like {like}")
    stats = make_like(like, out_dir, seed=seed, **({"size": size} if size is not None else {}), **given)
    click.echo(json.dumps(stats, indent=2))


@cli.command()
@click.argument("videos", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--clips", type=int, default=4, show_default=True, help="Clips shown (from the cache: one per class).")
@click.option("--frames", type=int, default=6, show_default=True, help="Frames shown per clip.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write. Default: <cache>/preview.png.")
@click.pass_obj
def preview(settings: Settings, videos, clips, frames, out):
    """PNG grid of original (top), enhanced (middle) frames and the enhancer's curve map (bottom;
    learned enhancers), for VIDEOS or for cached clips.

    With VIDEOS, they are enhanced with the cache's enhancer (fitted first if needed);
    without, clips are read from the cache (built first if needed).
    """
    from .pipeline.stages.tools import preview_png  # deferred: loads torch
    out = out or settings.cache / "preview.png"
    shown = preview_png(settings.config(), settings.cache, list(videos), clips, frames, out, settings.device_opt,
                        make_console())
    click.echo(f"wrote {out} ({len(shown)} clips: {', '.join(shown)})")


@cli.command()
@click.argument("videos", nargs=-1, type=click.Path(path_type=str))
@click.option("--list", "list_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Text file of videos, one path per line (relative to the file's folder).")
@click.option("--window", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Classify every window of this many seconds (a timeline) instead of whole videos.")
@click.option("--stride", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Seconds between window starts (default: --window, no overlap).")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None, metavar="P",
              help="With --window: merge consecutive windows of the same top class at probability "
                   ">= P into segments and print those.")
@click.option("--timeline", "timeline_png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --window: write a PNG of enhanced thumbnails above per-class probability curves "
                   "(one file per video: OUT-<video>.png when there are several).")
@click.option("--clips", type=click.IntRange(1), default=None,
              help="Temporal clips per whole video. Default: data.test_clips, as evaluate.")
@click.option("--crops", type=click.IntRange(1), default=None,
              help="Test views per clip (side evaluate.crop_scale x the short side when more than one). "
                   "Default: evaluate.crops per whole video (then the probabilities are evaluate's), 1 per window.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="Windows per forward pass.")
@click.option("--top", "topk", type=int, default=5, show_default=True, help="Classes to print (whole videos).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per video, window or segment.")
@click.pass_obj
def predict(settings: Settings, videos, list_file, window, stride, min_prob, timeline_png, clips, crops,
            batch, topk, as_json, as_csv):
    """Classify VIDEOS (files or folders, searched recursively) with the trained student alone,
    on original frames (no enhancer). With --window, print a timeline per video: start, end,
    top class, probability and runner-up per window (or merged segments with --min-prob).
    An unreadable video is reported and skipped; the exit status is 1 if any was."""
    from .pipeline.inference.printed import print_results  # deferred: loads torch
    from .pipeline.inference.windows import collect_videos
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    if window is None and (stride is not None or min_prob is not None or timeline_png is not None):
        raise click.UsageError("--stride, --min-prob and --timeline need --window SECONDS")
    if not videos and list_file is None:
        raise click.UsageError("name VIDEOS (files or folders) or --list FILE")
    paths = collect_videos(videos, list_file)
    if window is None:
        from .pipeline.inference.predict import predict_videos  # deferred: loads torch
        cfg = settings.config()  # the test views evaluate scores: data.test_clips x evaluate.crops
        results = predict_videos(settings.graph().out_dir("student"), paths, device=settings.device(),
                                 clips=clips or cfg.data.test_clips, crops=crops or cfg.evaluate.crops, topk=topk,
                                 scale=cfg.evaluate.crop_scale)
        print_results(results, as_json, as_csv, "videos")
    else:
        results = _predict_windows(settings, paths, window, window if stride is None else stride, min_prob,
                                   crops or 1, batch, timeline_png)
        print_results(results, as_json, as_csv, "segments" if min_prob is not None else "windows")
    if any("error" in r for r in results):
        sys.exit(1)


def _predict_windows(settings, paths, window, stride, min_prob, crops, batch, timeline_png) -> list[dict]:
    """Timelines of every video, as each finishes: pictures written, errors reported on stderr."""
    from .pipeline.stages.tools import predict_timelines  # deferred: loads torch
    results = []
    for r, png in predict_timelines(settings.config(), settings.cache, paths, window, stride, min_prob, crops, batch,
                                    timeline_png, settings.device_opt, make_console()):
        if "error" in r:
            click.echo(f"{r['video']}: error: {r['error']}", err=True)
        elif png is not None:
            click.echo(f"wrote {png}", err=True)
        results.append(r)
    return results


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def export(settings: Settings, out):
    """Write the trained student to OUT: ONNX if OUT ends in .onnx (dynamic batch; class names
    and normalisation in its metadata; needs the onnx extra), else TorchScript that runs without
    dlkdd (torch.jit.load; class names and input size in its meta.json extra file). Both take
    pixel / 255 clips and apply the model's input statistics inside."""
    from .pipeline.stages.tools import export_model  # deferred: loads torch
    click.echo(f"wrote {export_model(settings.graph().out_dir('student'), out)}")


@cli.command()
@click.option("--seeds", default="0,1,2,3,4", show_default=True, help="Student seeds, e.g. 0,1,2,3,4 or 0-4.")
@click.option("--teacher-seeds", is_flag=True, help="Also train a teacher (and its soft labels) per seed.")
@click.option("--chain", is_flag=True,
              help="Reseed the whole chain per seed: pretraining, enhancer fit, views, teacher, soft labels, "
                   "student and baseline (report/study-chain.*); the seed the config has shares the run's folders.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Seeds trained side by side in processes.")
@click.option("--ablate", is_flag=True,
              help="Also the rows that say where a gain comes from: models from scratch, the teacher on "
                   "original or gamma clips, a teacher of the student's size, inputs standardised with the "
                   "pretrained source's statistics or not at all (report/ablation.json and its forest plot "
                   "ablation.png). An arm that changes the teacher trains a teacher per seed.")
@click.option("--arms", "arm_names", default=None, metavar="NAME,NAME",
              help="The ablation with only these arms beside the DL-KDD arm, in this order (from-scratch, "
                   "teacher-original, teacher-gamma, teacher-small, normalize-source, normalize-none: those that "
                   "apply to the config).")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another dlkdd process to release an output it needs.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Score on the test split (the report) or the validation split (to tune settings with; "
                   "writes report/study-val.*).")
@click.pass_obj
def study(settings: Settings, seeds, teacher_seeds, chain, jobs, ablate, arm_names, wait, split):
    """Train baseline and DL-KDD student per seed against one cache, score each on the test split
    (multi-view), and write report/study.json, study.md and study.png: mean +- sd and the paired
    difference with its 95 % CI (a two-level bootstrap over seeds and test videos; the t-interval
    over seeds beside it). Fresh seeds are not retrained; a new seed trains only itself.
    Tune with `--split val` (the validation split, report/study-val.*), then report on test."""
    from .pipeline.study.arms import ARMS, ArmError, ablation_arms, named_arms  # deferred: the study loads torch
    from .pipeline.study.report import SPLIT_TEXT, report_names
    from .pipeline.study.runner import parse_seeds, run_study
    seed_list = parse_seeds(seeds)
    cfg = settings.config()
    command = "dlkdd " + " ".join(sys.argv[1:]) if sys.argv[1:] else "dlkdd study"
    if chain and teacher_seeds:
        raise click.UsageError("--chain reseeds the teacher already: give --chain or --teacher-seeds")
    scope = "chain" if chain else "teacher" if teacher_seeds else "student"
    try:
        arms = named_arms(cfg, arm_names) if arm_names is not None else ablation_arms(cfg) if ablate else ARMS
    except ArmError as e:
        raise click.UsageError(str(e)) from None
    result = run_study(cfg, settings.cache, seed_list, settings.device(), make_console(), scope=scope,
                       jobs=jobs, arms=arms, command=command, wait=wait, split=split)
    b, t = result["difference_bootstrap2"], result["difference"]
    click.echo(f"student - baseline over {len(seed_list)} seed(s): {b['mean']:+.2f} points, 95 % CI "
               f"[{b['ci95'][0]:+.2f}, {b['ci95'][1]:+.2f}] (two-level bootstrap over seeds and "
               f"{SPLIT_TEXT[split]} videos)"
               + (f"; paired t-interval over seeds [{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]"
                  if t["ci95"][0] is not None else ""))
    click.echo(f"report: {settings.cache / 'report' / report_names(split, scope)[1]}")


@cli.command(name="models")
@click.option("--classes", type=int, default=11, show_default=True, help="Class count to size the classifier.")
@click.pass_obj
def list_models(settings: Settings, classes):
    """List the registered video models with parameters and GFLOPs per clip at the configured size."""
    from .pipeline.stages.tools import model_table  # deferred: loads torch
    cfg = settings.config()
    for row in model_table(classes, cfg.data.frames, cfg.data.crop):
        click.echo(f"{row['model']:22s} {row['params'] / 1e6:8.3f} M params  {row['gflops']:8.3f} GFLOPs/clip "
                   f"({cfg.data.frames}x{cfg.data.crop}x{cfg.data.crop})")


def main() -> None:
    cli(prog_name="dlkdd")


if __name__ == "__main__":
    main()
