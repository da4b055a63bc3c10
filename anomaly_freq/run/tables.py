"""`afreq tables`: reproduced numbers beside published ones, per paper table and per method.

For every sweep file with ``published`` metadata, one block per (setting, metric): categories in
the field's canonical order with group means and the mean, the published columns of that paper
table, our reproduction (mean ± std over seeds and shot draws), and Δ against the published value
of the method we reproduce. Where the same points have also run unified (one model for all the
categories, ``dataset.setting=unified``), a "unified" column follows. Cells without runs say "not
run". Values are percentages.
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from anomaly_freq.config import build_method, load_config
from anomaly_freq.data import mvtec_ad, synthetic, visa
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_atomic
from anomaly_freq.metrics.monitor import PREFIX
from anomaly_freq.parameters import count_parameters
from anomaly_freq.run.published import PUBLISHED_DIR, load_published
from anomaly_freq.run.rundir import UNIFIED
from anomaly_freq.run.sweep import Point, Sweep, expand, load_sweep

GROUPS = {
    "mvtec_ad": {"mean_texture": mvtec_ad.TEXTURES, "mean_object": mvtec_ad.OBJECTS},
    "visa": {f"mean_{g}": tuple(c for c in visa.OBJECTS if visa.GROUPS[c] == g)
             for g in ("complex_structure", "multiple_instances", "single_instance")},
    "synthetic": {f"mean_{g}": tuple(c for c, v in synthetic.CATEGORIES.items() if v.group == g)
                  for g in ("texture", "object")},
}
OUR_METRIC = {"image_auroc": "image_auroc", "pixel_auroc": "pixel_auroc", "pro": "pixel_aupro"}
NOT_RUN = "not run"


@dataclass
class Block:
    """One rendered table: row labels, column names, display cells, numbers for 'best'."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[str], list[float | None]]] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    best_by: str = "row"  # or "column": where the bold maximum is taken


def category_order(dataset: str, present: set[str]) -> list[str]:
    """Categories in canonical order, followed by the summary rows that apply."""
    groups = GROUPS.get(dataset, {})
    ordered = [c for members in groups.values() for c in members if c in present]
    ordered += sorted(present - set(ordered) - {"mean", *groups})
    summaries = [g for g, members in groups.items() if set(members) & set(ordered)]
    return ordered + summaries + ["mean"]


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return NOT_RUN
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def _delta(value: float, reference: float) -> str:
    return f"{round(value - reference, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def _summary(values: dict[str, float], label: str, dataset: str,
             categories: list[str] | None = None) -> float | None:
    """A group mean or the mean; None unless every member category has a value."""
    if label == "mean":
        members = categories or [c for g in GROUPS.get(dataset, {}).values() for c in g]
    else:
        members = GROUPS.get(dataset, {}).get(label)
    if not members or any(c not in values for c in members):
        return None
    return statistics.fmean(values[c] for c in members)


def paper_blocks(sweep: Sweep, points: list[Point], results: pd.DataFrame,
                 published: pd.DataFrame) -> list[Block]:
    meta = sweep.published
    if meta.get("layout") == "summary":
        return [summary_block(sweep, points, results, published)]
    blocks = []
    for setting in sweep.settings:
        setting_points = [p for p in points if p.setting == setting]
        twins = unified_points(sweep, setting) if points else []
        dataset = _dataset(sweep, setting_points)
        for metric in meta.get("metrics", ["image_auroc"]):
            pub = published[(published["source"] == meta["source"])
                            & (published["table"] == meta["table"])
                            & (published["dataset"] == dataset)
                            & (published["version"] == meta.get("version", "paper"))
                            & (published["setting"] == meta.get("settings", {}).get(setting,
                                                                                    setting))
                            & (published["metric"] == metric)]
            blocks.append(_block(sweep, setting, metric, dataset, setting_points, results, pub,
                                 twins))
    return blocks


def _dataset(sweep: Sweep, points: list[Point]) -> str:
    for item in sweep.overrides:
        if item.startswith("dataset="):
            return item.split("=", 1)[1]
    return "synthetic"


def _block(sweep: Sweep, setting: str, metric: str, dataset: str, points: list[Point],
           results: pd.DataFrame, pub: pd.DataFrame, twins: list[Point]) -> Block:
    ours = sweep.published.get("method", "")
    methods = list(dict.fromkeys(pub["paper"]))
    published = {m: dict(zip(g["category"], g["value"], strict=True))
                 for m, g in pub.groupby("paper")}
    ours_metric = OUR_METRIC.get(metric, metric)
    used = results[results["config_hash"].isin({p.hash for p in points})]
    reproduced = _per_category(used, ours_metric)
    # the papers' own model selection, when the runs scored the test set during training
    oracle = _per_category(used, PREFIX + ours_metric)
    unified = _per_category(results[results["config_hash"].isin({p.hash for p in twins})],
                            ours_metric)
    present = {c for p in points for c in p.scored} | set(pub["category"])
    order = category_order(dataset, present)
    block = Block(f"{sweep.title or sweep.name} — {metric}, setting {setting}",
                  ["category", *methods, "reproduced", f"Δ vs {ours}" if ours else "Δ",
                   *(["best epoch on test"] if oracle else []),
                   *([UNIFIED] if unified else [])])
    means = {c: _mean_std(v)[0] for c, v in reproduced.items()}
    oracle_means = {c: _mean_std(v)[0] for c, v in oracle.items()}
    unified_means = {c: _mean_std(v)[0] for c, v in unified.items()}
    categories = [c for c in order if not c.startswith("mean")]
    for label in order:
        cells, numbers = [], []
        for m in methods:
            value = published[m].get(label)
            if value is None and label.startswith("mean"):
                value = _summary(published[m], label, dataset, categories)
            cells.append("—" if value is None else _fmt(value))  # the paper printed no value
            numbers.append(value)
        if label.startswith("mean"):
            mean, std = _summary(means, label, dataset, categories), None
        else:
            mean, std = _mean_std(reproduced[label]) if label in reproduced else (None, None)
        cells.append(_fmt(mean, std))
        numbers.append(mean)
        reference = published.get(ours, {}).get(label)
        cells.append(_delta(mean, reference) if mean is not None and reference is not None
                     else "")
        numbers.append(None)
        if oracle:
            if label.startswith("mean"):
                best = _summary(oracle_means, label, dataset, categories), None
            else:
                best = _mean_std(oracle[label]) if label in oracle else (None, None)
            # "—": the category ran, without scoring the test set during training
            ran = label in reproduced or (label.startswith("mean") and mean is not None)
            cells.append("—" if best[0] is None and ran else _fmt(*best))
            numbers.append(None)  # chosen on test data: never the bold "best"
        if unified:
            if label.startswith("mean"):
                cells.append(_fmt(_summary(unified_means, label, dataset, categories)))
            else:
                cells.append(_fmt(*_mean_std(unified[label])) if label in unified else NOT_RUN)
            numbers.append(None)  # another protocol than the published columns
        block.rows.append((label.replace("_", " "), cells, numbers))
    block.footer = _protocol_footer(sweep, used[used["metric"] == ours_metric])
    if oracle:
        block.footer.append("Best epoch on test: the evaluation during training with the best "
                            "test score, as the paper's code chose its model; shown for "
                            "comparison only, 'reproduced' is the last epoch.")
    if unified:
        block.footer.append("Unified: the same runs with dataset.setting=unified, one model "
                            "trained on every category's images at once and each category "
                            "scored apart (mean ± std over seeds); the published and "
                            "reproduced columns train one model per category.")
    return block


def unified_points(sweep: Sweep, setting: str) -> list[Point]:
    """The points of ``setting`` as unified runs: one per grid value but the categories."""
    twin = replace(sweep, overrides=[*sweep.overrides, f"dataset.setting={UNIFIED}"],
                   settings={setting: sweep.settings[setting]})
    return expand(twin)


def _per_category(used: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for _, row in used[used["metric"] == metric].iterrows():
        values.setdefault(row["category"], []).append(100 * row["value"])
    return values


def _protocol_footer(sweep: Sweep, used: pd.DataFrame) -> list[str]:
    lines = []
    if used.empty:
        lines.append(f"No runs yet: reproduce with `afreq sweep {sweep.path.as_posix()}`.")
    else:
        def values(column: str) -> str:
            return ", ".join(str(v) for v in sorted(used[column].dropna().unique(), key=str))

        lines.append(f"Protocol: resolution {values('eval_resolution')}, epochs "
                     f"{values('epochs')}, model selection {values('model_selection')}, seeds "
                     f"{values('seed')}, shots {values('shots') or 'all'}, AUPRO variant "
                     f"{values('pro_variant') or 'n/a'}, score normalisation "
                     f"{values('score_normalisation')}.")
    lines += [f"Deviation: {d}" for d in sweep.deviations]
    lines.append("Published group means that the paper did not print are computed from its "
                 "per-category values. Reproduced cells are mean ± std over seeds.")
    return lines


def summary_block(sweep: Sweep, points: list[Point], results: pd.DataFrame,
                  published: pd.DataFrame) -> Block:
    """A table printed as one row per method and setting and one column per metric, each
    averaged over datasets (FAIR Table 5: detection and localisation as the mean of the MVTec AD
    and VisA means, FPS and parameters). A reproduced dataset mean needs every category run."""
    meta = sweep.published
    metrics = meta.get("metrics", ["image_auroc"])
    pub = published[(published["source"] == meta["source"]) & (published["table"] == meta["table"])]
    block = Block(sweep.title or sweep.name, ["row", *metrics], best_by="column")
    for (paper, setting), group in pub.groupby(["paper", "setting"], sort=False):
        values = dict(zip(group["metric"], group["value"], strict=True))
        numbers = [values.get(m) for m in metrics]
        block.rows.append((paper if setting == "full" else f"{paper} ({setting})",
                           ["—" if v is None else _fmt(v) for v in numbers],
                           [v if m in OUR_METRIC else None for m, v in zip(metrics, numbers,
                                                                           strict=True)]))
    ours = pub[pub["paper"] == meta.get("method", "")]
    for setting in sweep.settings:
        setting_points = [p for p in points if p.setting == setting]
        row = ours[ours["setting"] == meta.get("settings", {}).get(setting, setting)]
        reference = dict(zip(row["metric"], row["value"], strict=True))
        cells, numbers = [], []
        for metric in metrics:
            value, cell = _reproduced_summary(metric, setting_points, results)
            if value is not None and metric in reference:
                cell += f" ({_delta(value, reference[metric])})"
            cells.append(cell)
            numbers.append(value if metric in OUR_METRIC else None)
        block.rows.append((f"reproduced {setting}", cells, numbers))
    used = results[results["config_hash"].isin({p.hash for p in points})]
    block.footer = [*_protocol_footer(sweep, used),
                    "Reproduced rows: Δ against the published row of the same setting in "
                    "brackets; params_mb counts the built model's parameters / 2^20 (the unit "
                    "the paper's errata gives), no run needed; fps is a GPU timing that "
                    "`make bench` measures on the machine it runs on (docs/benchmarks.md)."]
    return block


def _reproduced_summary(metric: str, points: list[Point],
                        results: pd.DataFrame) -> tuple[float | None, str]:
    """The mean over datasets of each dataset's mean over categories (of the seed means)."""
    if not points:
        return None, NOT_RUN
    if metric == "params_mb":  # a property of the model, counted on a freshly built one
        cfg = load_config(list(points[0].overrides))
        model = build_method(cfg)
        value = count_parameters(model) / 2**20
        return value, _fmt(value)
    if metric not in OUR_METRIC:
        return None, "not measured"
    hashes = {p.hash for p in points}
    ran = results[results["config_hash"].isin(hashes)]
    runs = ran[ran["metric"] == OUR_METRIC[metric]]
    if ran["config_hash"].nunique() < len(hashes):
        done = ran["config_hash"].nunique()
        return None, NOT_RUN if not done else f"{done}/{len(hashes)} runs"
    if runs["config_hash"].nunique() < len(hashes):
        return None, "n/a"  # every point ran, but not every run gives this metric (no masks)
    by_category = runs.groupby(["dataset", "category"])["value"].mean()
    value = 100 * by_category.groupby(level="dataset").mean().mean()
    return value, _fmt(value)


def one_row_per_config(results: pd.DataFrame) -> pd.DataFrame:
    """Runs of one configuration (equal hash) count once, at their mean: a rerun is not a seed.
    A unified run's categories share its hash and stay apart."""
    keys = ["config_hash", "category", "metric"]
    mean = results.groupby(keys, sort=False, dropna=False)["value"].transform("mean")
    return results.assign(value=mean).drop_duplicates(keys)


def cross_method_blocks(results: pd.DataFrame) -> list[Block]:
    """Every method that has runs on the synthetic set, side by side; a set of blocks per data
    setting (the shipped set first, then e.g. ``defect_strength=0.3``)."""
    runs = results[results["dataset"] == "synthetic"]
    runs = runs.assign(data=runs["data"].astype(object).fillna(""))
    blocks = []
    for data in sorted(set(runs["data"]), key=lambda d: (d != "", d)):
        blocks += _cross_method_data_blocks(runs[runs["data"] == data], data)
    return blocks


def _cross_method_data_blocks(runs: pd.DataFrame, data: str) -> list[Block]:
    blocks = []
    # a column per configuration, named by its preset (hash added where a preset has several)
    first = runs.groupby(["method", "variant"])[["preset", "setting"]].first()
    presets = pd.Series([f"{p} {UNIFIED}" if s == UNIFIED else p
                         for p, s in zip(first["preset"], first["setting"], strict=True)],
                        index=first.index, dtype=object)
    counts = presets.value_counts()
    labels = {key: name if counts[name] == 1 else f"{name} ({key[1][:6]})"
              for key, name in presets.items()}
    for metric in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        subset = runs[runs["metric"] == metric]
        if subset.empty:
            continue
        title = f"Synthetic set — {metric}" + (f" ({data})" if data else "")
        block = Block(title, ["category", *labels.values()])
        per = {key: {} for key in labels}
        for (m, v, c), g in subset.groupby(["method", "variant", "category"]):
            per[(m, v)][c] = [100 * x for x in g["value"]]
        for label in category_order("synthetic", set(synthetic.CATEGORIES)):
            cells, numbers = [], []
            for key in labels:
                if label.startswith("mean"):
                    means = {c: statistics.fmean(v) for c, v in per[key].items()}
                    mean, std = _summary(means, label, "synthetic"), None
                elif label in per[key]:
                    mean, std = _mean_std(per[key][label])
                else:
                    mean, std = None, None
                cells.append(_fmt(mean, std))
                numbers.append(mean)
            block.rows.append((label.replace("_", " "), cells, numbers))
        block.footer = ["Each column is one method configuration; mean ± std over seeds. Runs "
                        "come from the result store, so a new plugin appears once it has run."]
        if (first["setting"] == UNIFIED).any():
            block.footer.append(f"'{UNIFIED}': one model for all the categories (dataset."
                                f"setting={UNIFIED}), beside the per-category models.")
        blocks.append(block)
    return blocks


def _bold(block: Block) -> list[list[bool]]:
    """Which cells hold their row's (or column's) maximum, as printed (one decimal)."""
    grid = [[None if n is None else round(n, 1) for n in numbers] for _, _, numbers in block.rows]
    lines = grid if block.best_by == "row" else [list(col) for col in zip(*grid, strict=True)]
    marks = [[n is not None and n == max((x for x in line if x is not None), default=None)
              for n in line] for line in lines]
    return marks if block.best_by == "row" else [list(row) for row in zip(*marks, strict=True)]


def to_markdown(blocks: list[Block]) -> str:
    out = io.StringIO()
    for block in blocks:
        out.write(f"### {block.title}\n\n| " + " | ".join(block.columns) + " |\n|")
        out.write("---|" * len(block.columns) + "\n")
        for (label, cells, _), bold in zip(block.rows, _bold(block), strict=True):
            shown = [f"**{c}**" if b else c for c, b in zip(cells, bold, strict=True)]
            out.write(f"| {label} | " + " | ".join(shown) + " |\n")
        out.write("\n" + "\n".join(f"{line}  " for line in block.footer) + "\n\n")
    return out.getvalue()


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace(
        "—", "--")


def to_latex(blocks: list[Block]) -> str:
    out = io.StringIO()
    for block in blocks:
        out.write(f"% {_tex(block.title)}\n\\begin{{tabular}}{{l{'r' * (len(block.columns) - 1)}}}"
                  "\n\\toprule\n" + " & ".join(map(_tex, block.columns)) + r" \\" + "\n\\midrule\n")
        for (label, cells, _), bold in zip(block.rows, _bold(block), strict=True):
            shown = [rf"\textbf{{{_tex(c)}}}" if b else _tex(c)
                     for c, b in zip(cells, bold, strict=True)]
            out.write(" & ".join([_tex(label), *shown]) + r" \\" + "\n")
        out.write("\\bottomrule\n\\end{tabular}\n\n")
    return out.getvalue()


def to_csv(blocks: list[Block]) -> str:
    rows = [{"table": b.title, "row": label, "column": col, "cell": cell}
            for b in blocks for label, cells, _ in b.rows
            for col, cell in zip(b.columns[1:], cells, strict=True)]
    return pd.DataFrame(rows).to_csv(index=False)


def write_tables(sweep_files: list[Path], results: pd.DataFrame, out_dir: Path,
                 published_dir: Path = PUBLISHED_DIR) -> list[Path]:
    """Write Markdown, LaTeX and CSV per paper table and for the synthetic comparison."""
    published = load_published(published_dir)
    results = one_row_per_config(results)
    written = []
    jobs = []
    for path in sweep_files:
        sweep = load_sweep(path)
        if not sweep.published:
            continue
        try:
            points = expand(sweep)
        except AfreqError as err:  # e.g. the method is not implemented or installed here
            points = []
            sweep.deviations.append(f"cannot expand this sweep here: {err}")
        jobs.append((sweep.name, paper_blocks(sweep, points, results, published)))
    jobs.append(("synthetic/cross_method", cross_method_blocks(results)))
    for name, blocks in jobs:
        stem = out_dir / name.replace("/", "__")
        header = f"# {name}\n\nGenerated by `afreq tables`. Values in %.\n\n"
        write_atomic(stem.with_suffix(".md"), header + to_markdown(blocks))
        write_atomic(stem.with_suffix(".tex"), to_latex(blocks))
        write_atomic(stem.with_suffix(".csv"), to_csv(blocks))
        written.append(stem.with_suffix(".md"))
    index = "# Tables\n\n" + "".join(f"- [{p.stem}]({p.name})\n" for p in written)
    write_atomic(out_dir / "README.md", index)
    return written
