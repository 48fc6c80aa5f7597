"""What `dlkdd status` prints: rich tables on a terminal, one plain line per stage in a log or a pipe."""
from __future__ import annotations

import click


def print_status(cache, state: dict, terminal: bool) -> None:
    """`state`: `cache_status`'s answer (its "stages" rows and "student_variants")."""
    rows, variants = state["stages"], state["student_variants"]
    if terminal:
        _status_tables(cache, rows, variants)
        return
    click.echo(f"dlkdd cache {cache}")  # a log or a pipe: one line per stage, nothing wrapped
    for r in rows:
        why = "; ".join(r["reasons"]) or "-"
        click.echo(f"{r['stage']:<12} {r['state']:<8} {_last_run(r) or '-':<25} {r['output']:<12} {why}")
    for v in variants:
        click.echo(f"student variant {v['variant']}  alpha {v['alpha']}  T {v['temperature']}  "
                   f"top-1 {_pct(v['top1'])}  top-5 {_pct(v['top5'])}  trained {_when(v['started']) or '-'}")


def _pct(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else "-"


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else ""


def _last_run(r: dict) -> str:
    return f"{_when(r['finished'])} ({r['seconds']:.0f} s)" if r["finished"] else ""


def _status_tables(cache, rows: list[dict], variants: list[dict]) -> None:
    """rich tables as wide as the terminal: only the reasons and folders wrap, never a timestamp."""
    from rich.console import Console  # deferred: 0.1 s to import, and only a terminal shows tables
    from rich.table import Table

    table = Table(title=f"dlkdd cache {cache}")
    table.add_column("stage", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=3)
    table.add_column("output", overflow="fold", ratio=1)
    table.add_column("last run", no_wrap=True)
    colour = {"fresh": "green", "stale": "yellow", "missing": "red"}
    for r in rows:
        table.add_row(r["stage"], f"[{colour[r['state']]}]{r['state']}[/]", "\n".join(r["reasons"]),
                      r["output"], _last_run(r))
    Console().print(table)
    if variants:
        vt = Table(title="student variants in this cache (each in its own folder)")
        for col in ("variant", "alpha", "T", "top-1", "top-5", "trained"):
            vt.add_column(col, no_wrap=col != "variant", overflow="fold")
        for v in variants:
            vt.add_row(v["variant"], f"{v['alpha']}", f"{v['temperature']}", _pct(v["top1"]), _pct(v["top5"]),
                       _when(v["started"]))
        Console().print(vt)
