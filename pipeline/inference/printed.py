"""What `dlkdd predict` prints: a line per video (its top classes), a timeline per video, JSON or CSV."""
from __future__ import annotations

import json

import click

from .windows import timeline_text, to_csv


def print_results(results: list[dict], as_json: bool, as_csv: bool, kind: str) -> None:
    """`kind`: "videos" (one line of top classes each), "windows" or "segments" (a timeline each).
    Errors go to stderr; a windowed run reported its own as each video finished."""
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif as_csv:
        click.echo(to_csv(results, kind), nl=False)
    for r in results:
        if "error" in r:
            if kind == "videos":  # windowed runs reported theirs as they happened
                click.echo(f"{r['video']}: error: {r['error']}", err=True)
        elif not (as_json or as_csv):
            if kind == "videos":
                ranked = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"])
                click.echo(f"{r['video']}: {ranked}")
            else:
                click.echo(timeline_text(r, segments=kind == "segments"))
