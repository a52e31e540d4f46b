"""The report of one run: JSON, a Markdown table, PNG charts, and the docs page.

python -m benchmarks.report RESULTS.json [--out DIR] [--docs]

re-renders the Markdown and the charts of a run that was written before, and with
``--docs`` copies them into ``docs/benchmarks.md`` (between its markers) and
``docs/benchmarks/``.

Ratios are same-run ones: for two contenders of one scenario, the ratio of their
figures in each repetition (they ran back to back), then the median of those ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import re
import shutil
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.table import Table

from .harness import Result

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_IMAGES = ROOT / "docs" / "benchmarks"
#: The multiplication sign and the en dash of the tables.
TIMES, DASH = "\u00d7", "\u2013"
START, END = "<!-- results:start -->", "<!-- results:end -->"

#: The peer libraries whose versions the report names.
LIBRARIES = (
    "redis",
    "hiredis",
    "python-redis-lock",
    "pottery",
    "aioredlock",
    "mithril-locks",
    "kazoo",
    "aiozk",
    "etcetra",
)

#: Columns shown after the primary figure, by primary figure: (key, heading, format).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "acquisitions_per_s": [
        ("handoff_share", "handoffs", "{:.0%}"),
        ("handoff_p50_ms", "handoff p50 ms", "{:.2f}"),
        ("handoff_p99_ms", "handoff p99 ms", "{:.2f}"),
        ("max_wait_ms", "wait max ms", "{:,.0f}"),
        ("worker_min_over_mean", "worker min/mean", "{:.2f}"),
        ("worker_max_over_mean", "worker max/mean", "{:.2f}"),
        ("seconds", "seconds", "{:.2f}"),
        ("rss_bytes_per_lock", "RSS B/lock", "{:,.0f}"),
        ("traced_bytes_per_lock", "traced B/lock", "{:,.0f}"),
        ("renewal_requests_per_s", "renewal req/s", "{:,.0f}"),
    ],
    "handoffs_per_s": [
        ("enqueue_s", "enqueue s", "{:.2f}"),
        ("drain_s", "drain s", "{:.2f}"),
        ("rss_bytes_per_waiter", "RSS B/waiter", "{:,.0f}"),
    ],
}


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# -- ratios -----------------------------------------------------------------------------


def scenarios(results: Iterable[Result]) -> dict[tuple[str, str], list[Result]]:
    """Results of interleaved scenarios, by (suite, scenario), in run order."""
    out: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.scenario:
            out.setdefault((r.suite, r.scenario), []).append(r)
    return out


def paired_ratio(a: Result, b: Result) -> float | None:
    """Median over the repetitions of a's primary figure / b's (same repetition)."""
    key = a.primary
    pairs = [
        x[key] / y[key]
        for x, y in zip(a.runs, b.runs, strict=False)
        if key in x and key in y and y[key]
    ]
    if pairs:
        return statistics.median(pairs)
    return None


def lockkit_row(rows: list[Result]) -> Result | None:
    """The scenario's main lockkit row (the first of role lockkit that ran)."""
    return next((r for r in rows if r.role == "lockkit" and not r.failed), None)


# -- Markdown ---------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    if value is None or value != value:  # None or NaN
        return DASH
    if pattern == "{:,.0f}" and abs(value) < 100:
        pattern = "{:,.2f}" if abs(value) < 10 else "{:,.1f}"
    return pattern.format(value)


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}{TIMES}"


def _label(key: str) -> str:
    return key.replace("_per_s", "/s").replace("_", " ")


def summary_rows(results: list[Result]) -> list[list[str]]:
    """Per suite and scenario: lockkit's median and its ratio to each floor and peer."""
    rows = []
    for (suite, scenario), group in scenarios(results).items():
        mine = lockkit_row(group)
        if mine is None:
            rows.append([suite, scenario, "lockkit did not run", "", ""])
            continue
        floors = [
            f"{r.contender}: {_ratio(paired_ratio(mine, r))}"
            for r in group
            if r.role == "floor" and not r.failed
        ]
        peers = [
            f"{r.contender}: {_ratio(paired_ratio(mine, r))}"
            for r in group
            if r is not mine and r.role != "floor" and not r.failed
        ]
        peers += [f"{r.contender}: could not run" for r in group if r.failed]
        rows.append(
            [
                suite,
                scenario,
                f"{_fmt(mine.figures[mine.primary])} {_label(mine.primary)}",
                "<br>".join(floors) or DASH,
                "<br>".join(peers) or DASH,
            ]
        )
    return rows


def _table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    lines = ["| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(align or ("---" for _ in head)) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def markdown(
    results: list[Result], env: dict[str, Any], images: str | None, charted: Iterable[str] = ()
) -> str:
    """The tables of one run (``images``: the folder the PNGs are linked from;
    ``charted``: the suites that have one)."""
    charted = set(charted)
    out = [f"Run of {env.get('started', '?')} ({env.get('mode', 'full')})", ""]
    out += [*machine_lines(env), ""]
    out += ["### Summary: lockkit against the floors and the peers", ""]
    out += [
        "Ratios are lockkit's figure over the other's (higher is better for lockkit), "
        "taken within each repetition and then the median.",
        "",
    ]
    out += _table(
        ["suite", "scenario", "lockkit (median)", f"{TIMES} floor", f"{TIMES} peer"],
        summary_rows(results),
    )
    by_suite: dict[str, list[Result]] = {}
    for r in results:
        by_suite.setdefault(r.suite, []).append(r)
    for suite, rows in by_suite.items():
        out += ["", f"### {suite}", ""]
        if images and suite in charted:
            out += [f"![{suite}]({images}/{suite}.png)", ""]
        for (s, scenario), group in scenarios(rows).items():
            del s
            primary = group[0].primary
            extra = [c for c in COLUMNS.get(primary, []) if any(c[0] in r.figures for r in group)]
            mine = lockkit_row(group)
            out += [f"**{scenario}** ({_label(primary)}, median of {len(group[0].runs) or 0})", ""]
            head = ["contender", _label(primary), f"min{DASH}max", f"lockkit {TIMES}"] + [
                c[1] for c in extra
            ]
            table_rows = []
            for r in group:
                if r.failed:
                    table_rows.append(
                        [r.contender, "could not run", r.notes[:160], DASH] + [DASH] * len(extra)
                    )
                    continue
                values = [run[primary] for run in r.runs]
                ratio = "" if r is mine else _ratio(paired_ratio(mine, r)) if mine else DASH
                table_rows.append(
                    [
                        f"**{r.contender}**" if r is mine else r.contender,
                        _fmt(r.figures[primary]),
                        f"{_fmt(min(values))}{DASH}{_fmt(max(values))}",
                        ratio,
                    ]
                    + [_fmt(r.figures.get(key), pattern) for key, _, pattern in extra]
                )
            out += [*_table(head, table_rows), ""]
        singles = [r for r in rows if not r.scenario]
        if singles:
            out += ["Single measurements:", ""]
            single_rows = []
            for r in singles:
                figures = ", ".join(f"{_label(k)} {_fmt(v)}" for k, v in r.figures.items())
                notes = ("FAILED: " if r.failed else "") + r.notes
                single_rows.append([r.name, figures, notes[:300]])
            out += _table(["measurement", "figures", "notes"], single_rows)
    return "\n".join(out) + "\n"


def machine_lines(env: dict[str, Any]) -> list[str]:
    servers = ", ".join(f"{k} {v}" for k, v in sorted(env.get("servers", {}).items()))
    libraries = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
    load_before = env.get("load_before") or [float("nan")] * 3
    load_after = env.get("load_after") or [float("nan")] * 3
    suites = ", ".join(f"{k} {v:.0f}s" for k, v in env.get("suite_seconds", {}).items())
    return [
        f"- machine: {env.get('cpus')} CPUs, {env.get('platform')}; Python {env.get('python')}",
        f"- load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after (a shared machine)",
        f"- servers: {servers or DASH}",
        f"- lockkit {env.get('lockkit')} ({env.get('commit', 'commit not recorded')}); "
        f"peers: {libraries or DASH}",
        f"- {env.get('repeats')} repetitions of {env.get('duration_s')} s per measurement; "
        f"{env.get('total_seconds', 0):.0f} s in all ({suites})",
    ]


# -- charts -----------------------------------------------------------------------------


def charts(results: list[Result], folder: Path) -> list[Path]:
    """One PNG per suite: a horizontal bar per contender and scenario, the median with
    the min-max of the repetitions; lockkit's bars in colour."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no charts (pip install -r benchmarks/requirements.txt)")
        return []
    written = []
    by_suite: dict[str, dict[tuple[str, str], list[Result]]] = {}
    for key, group in scenarios(results).items():
        by_suite.setdefault(key[0], {})[key] = group
    for suite, groups in by_suite.items():
        count = len(groups)
        heights = [max(1.2, 0.38 * len(g) + 0.9) for g in groups.values()]
        fig, axes = plt.subplots(
            count, 1, figsize=(9, sum(heights)), gridspec_kw={"height_ratios": heights}
        )
        axes = [axes] if count == 1 else list(axes)
        for ax, ((_, scenario), group) in zip(axes, groups.items(), strict=True):
            primary = group[0].primary
            names, medians, lows, highs, colours = [], [], [], [], []
            for r in group:
                names.append(r.contender + (" (could not run)" if r.failed else ""))
                values = [run[primary] for run in r.runs if primary in run] or [0.0]
                median = r.figures.get(primary, 0.0) if not r.failed else 0.0
                medians.append(median)
                lows.append(max(0.0, median - min(values)) if not r.failed else 0.0)
                highs.append(max(0.0, max(values) - median) if not r.failed else 0.0)
                colours.append({"lockkit": "#1f77b4", "floor": "#9e9e9e"}.get(r.role, "#ff7f0e"))
            y = list(range(len(names)))[::-1]
            ax.barh(y, medians, xerr=[lows, highs], color=colours, capsize=3)
            ax.set_yticks(y, names, fontsize=8)
            ax.set_title(f"{suite}: {scenario}", fontsize=9, loc="left")
            ax.set_xlabel(_label(primary) + f" (median, min{DASH}max)", fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        path = folder / f"{suite}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


# -- writing --------------------------------------------------------------------------


def write(
    results: list[Result], env: dict[str, Any], out: Path, *, charts: bool = True, docs: bool
) -> list[Path]:
    """``out/bench-<time>.json`` and ``out/latest/`` (results.json, results.md, PNGs);
    with ``docs``, the docs page's results section and its images as well."""
    latest = out / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    data = {"env": env, "results": [dataclasses.asdict(r) for r in results]}
    stamped = out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    text = json.dumps(data, indent=1)
    stamped.write_text(text)
    (latest / "results.json").write_text(text)
    return [stamped, *render(results, env, latest, with_charts=charts, docs=docs)]


def render(
    results: list[Result], env: dict[str, Any], latest: Path, *, with_charts: bool, docs: bool
) -> list[Path]:
    for old in latest.glob("*.png"):
        old.unlink()
    pngs = charts(results, latest) if with_charts else []
    md = latest / "results.md"
    md.write_text(
        "# lockkit benchmarks\n\n"
        + markdown(results, env, "." if pngs else None, (p.stem for p in pngs))
    )
    written = [md, *pngs]
    if docs:
        written += publish(results, env, pngs)
    return written


def publish(results: list[Result], env: dict[str, Any], pngs: list[Path]) -> list[Path]:
    """The tables into ``docs/benchmarks.md`` between its markers; PNGs beside it."""
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    for old in DOCS_IMAGES.glob("*.png"):
        old.unlink()
    copied = []
    for png in pngs:
        target = DOCS_IMAGES / png.name
        shutil.copyfile(png, target)
        copied.append(target)
    body = markdown(results, env, "benchmarks" if pngs else None, (p.stem for p in pngs))
    page = DOCS_PAGE.read_text() if DOCS_PAGE.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in page or END not in page:
        page += f"\n{START}\n{END}\n"
    page = re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        lambda _m: f"{START}\n{body}{END}",
        page,
        flags=re.S,
    )
    DOCS_PAGE.write_text(page)
    return [DOCS_PAGE, *copied]


def load(path: Path) -> tuple[list[Result], dict[str, Any]]:
    data = json.loads(path.read_text())
    return [Result(**r) for r in data["results"]], data["env"]


def rich_table(results: list[Result]) -> Table:
    table = Table(title="lockkit against the floors and the peers (same-run ratios)")
    for head in ("suite", "scenario", "lockkit (median)", f"{TIMES} floor", f"{TIMES} peer"):
        table.add_column(head)
    for row in summary_rows(results):
        table.add_row(*(cell.replace("<br>", "\n") for cell in row))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("json", type=Path)
    parser.add_argument("--out", type=Path, help="folder for results.md and the PNGs")
    parser.add_argument("--docs", action="store_true", help="publish into docs/ as well")
    args = parser.parse_args()
    results, env = load(args.json)
    for path in render(
        results, env, args.out or args.json.parent, with_charts=True, docs=args.docs
    ):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
