"""A sweep's own table, `afreq tables <sweep.yaml>`: a row per combination of the grid's varied
values, a column per category and the mean, each cell the mean ± std over that point's seeds in
%. "not run" where no seed has finished, "—" where the grid has no such point. A sweep that varies
``dataset.setting`` gets a row per setting: a unified run fills every category of its row."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from anomaly_freq.files import write_atomic, write_csv
from anomaly_freq.run.store import SEED_KEYS, load_results
from anomaly_freq.run.sweep import Point, Sweep, expand, load_sweep
from anomaly_freq.run.tables import (
    NOT_RUN,
    Block,
    _fmt,
    _mean_std,
    one_row_per_config,
    to_markdown,
)

METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
NOT_IN_GRID = "—"
NO_METRIC = "n/a"  # the runs finished without this metric (a dataset without masks)


def varied_keys(sweep: Sweep) -> list[str]:
    """What the rows are labelled by: the setting, when there are several, and every grid key
    with several values but the category and the seeds (those are columns and spreads)."""
    keys = [key for key, values in sweep.grid.items() if isinstance(values, list)
            and len(values) > 1 and key != "dataset.category" and key not in SEED_KEYS]
    return (["setting"] if len(sweep.settings) > 1 else []) + keys


def sweep_table(sweep: Sweep, points: list[Point],
                results: pd.DataFrame) -> tuple[list[Block], list[dict[str, str]]]:
    """A block per metric, and the same cells as CSV rows (one column per varied key)."""
    keys = varied_keys(sweep)
    categories = list(dict.fromkeys(c for p in points for c in p.scored))
    grid: dict[tuple[str, ...], dict[str, list[Point]]] = {}
    for p in points:
        values = {"setting": p.setting, **dict(p.values)}
        row = grid.setdefault(tuple(values[k] for k in keys), {})
        for category in p.scored:
            row.setdefault(category, []).append(p)
    results = one_row_per_config(results)
    finished = set(results["config_hash"])
    ran = set(results[results["config_hash"].isin({p.hash for p in points})]["metric"])
    blocks, csv_rows = [], []
    for metric in [m for m in METRICS if m in ran] or [METRICS[0]]:
        scores = results[results["metric"] == metric]
        score = dict(zip(zip(scores["config_hash"], scores["category"], strict=True),
                         100 * scores["value"], strict=True))
        block = Block(f"{sweep.title or sweep.name} — {metric}",
                      [" · ".join(keys) or "sweep", *categories, "mean"], best_by="column")
        for row, cells_points in grid.items():
            cells = [_cell(cells_points.get(c, []), c, finished, score) for c in categories]
            cells.append(_mean_cell([cell for c, cell in zip(categories, cells, strict=True)
                                     if c in cells_points]))
            # one row has nothing to be best against
            numbers = [n if len(grid) > 1 else None for _, n in cells]
            texts = [text for text, _ in cells]
            block.rows.append((" · ".join(row) or sweep.name, texts, numbers))
            labels = dict(zip(keys, row, strict=True)) if keys else {"sweep": sweep.name}
            csv_rows.append({"metric": metric, **labels,
                             **dict(zip([*categories, "mean"], texts, strict=True))})
        block.footer = _footer(sweep)
        blocks.append(block)
    return blocks, csv_rows


def _cell(points: list[Point], category: str, finished: set[str],
          score: dict[tuple[str, str], float]) -> tuple[str, float | None]:
    if not points:
        return NOT_IN_GRID, None
    done = [p for p in points if p.hash in finished]
    values = [score[p.hash, category] for p in done if (p.hash, category) in score]
    if not done:
        return NOT_RUN, None
    if not values:
        return NO_METRIC, None
    mean, std = _mean_std(values)
    partial = f" ({len(done)}/{len(points)} seeds)" if len(done) < len(points) else ""
    return _fmt(mean, std) + partial, mean


def _mean_cell(cells: list[tuple[str, float | None]]) -> tuple[str, float | None]:
    """The mean over the row's categories, once each has a value."""
    values = [n for _, n in cells if n is not None]
    if len(values) == len(cells):
        mean = statistics.fmean(values)
        return _fmt(mean), mean
    if values:
        return f"{len(values)}/{len(cells)} categories", None
    return (NO_METRIC if all(t == NO_METRIC for t, _ in cells) else NOT_RUN), None


def _footer(sweep: Sweep) -> list[str]:
    seeds = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in sweep.grid.items()
                      if k in SEED_KEYS and isinstance(v, list))
    return [f"Mean ± std over seeds ({seeds or 'one per point'}), in %; (k/n seeds): k of the n "
            f"seeds have finished. \"{NOT_RUN}\": no finished run yet (`afreq sweep "
            f"{sweep.path.as_posix()}`); \"{NOT_IN_GRID}\": not a point of the grid.",
            *(f"Deviation: {d}" for d in sweep.deviations)]


def write_sweep_table(path: Path, root: Path | None = None,
                      out_dir: Path | None = None) -> list[Path]:
    """Markdown and CSV of the sweep's table, from the runs under ``root`` (default: the
    sweep's output root), into ``out_dir`` (default ``<root>/tables``)."""
    sweep = load_sweep(path)
    points = expand(sweep)
    roots = [root] if root else list(dict.fromkeys(p.output_root for p in points)) or [
        Path("runs")]
    frames = [load_results(r) for r in roots]
    results = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    blocks, rows = sweep_table(sweep, points, results)
    folder = out_dir or roots[0] / "tables"
    stem = sweep.name.replace("/", "__") + ".grid"
    header = f"# {sweep.title or sweep.name}\n\nGenerated by `afreq tables {path.as_posix()}`.\n\n"
    written = [folder / f"{stem}.md", folder / f"{stem}.csv"]
    write_atomic(written[0], header + to_markdown(blocks))
    write_csv(written[1], rows)
    return written
