"""The `afreq` command line."""

from __future__ import annotations

import argparse
import signal
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anomaly_freq import __version__, registry
from anomaly_freq.errors import AfreqError

EXAMPLES = """\
examples:
  afreq run                                   freqstat on every synthetic category
  afreq run method=fair dataset=visa dataset.category=pcb1 trainer.max_epochs=5
  afreq run dataset=synthetic dataset.category=weave seed=3
  afreq list                                  methods, datasets and their categories
  afreq list categories dataset=synthetic
  afreq export checkpoint=<run folder> format=onnx    a deployable model.onnx in the run folder

Overrides are key=value on the merged configuration (configs/default.yaml, then
configs/method/<method>.yaml, configs/dataset/<dataset>.yaml); +key=value adds a new key.
Runs are written to runs/<method>/<dataset>/<category>/<run-id>/.
"""

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AfreqError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: no result was written for the run "
                                   "in progress")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afreq",
        description="Frequency-domain industrial visual anomaly detection benchmark.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"afreq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate a method on a dataset",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration as YAML, each value with the "
                        "layer that set it, and exit")
    p.add_argument("--cfg", choices=["job"], help="the same as --print-config (Hydra's habit)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("spectrum", help="plot normal vs anomalous test spectra of a category "
                       "and their ratio per frequency band (PNG and CSV)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_spectrum)

    p = sub.add_parser("sweep", help="run a grid of runs from a sweep file, resumably")
    p.add_argument("file", help="sweep YAML, e.g. experiments/fair/table1_mvtec_image.yaml")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel local workers (at most visible GPUs / --devices-per-job)")
    p.add_argument("--devices-per-job", type=int, default=1, metavar="D",
                   help="GPUs of each local worker, one DDP run over them (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs that would start")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("results", help="runs grouped by configuration, mean ± std over seeds")
    p.add_argument("--root", default="runs", help="run folder root (default runs)")
    p.add_argument("--export", help="write one row per run and metric to a .csv or .parquet file")
    p.add_argument("--grouped", action="store_true",
                   help="with --export: write the grouped table instead (mean, std, n)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("tables", help="a sweep's own table, or the paper tables and the "
                                      "synthetic comparison")
    p.add_argument("sweep", nargs="?", help="a sweep file: its table (a row per combination of "
                                            "the grid's varied values, a column per category)")
    p.add_argument("--sweep", dest="sweep_option", metavar="FILE", help="the same as SWEEP")
    p.add_argument("--root", help="run folder root (default runs, or the sweep's output.root)")
    p.add_argument("--experiments", default="experiments",
                   help="folder of sweep files and published/ (default experiments)")
    p.add_argument("--out", help="output folder (default <root>/tables)")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("predict", help="score new images with a saved checkpoint or an "
                                       "exported model")
    p.add_argument("settings", nargs="+", metavar="key=value",
                   help="checkpoint=<run folder or its model.pt>, or a file afreq export wrote "
                        "(.onnx, TorchScript .pt), images=<folder> [method=<name>] "
                        "[output=<folder>]")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a trained model as an ONNX or TorchScript file "
                                      "for deployment, with its metadata JSON")
    p.add_argument("settings", nargs="+", metavar="key=value",
                   help="checkpoint=<run folder or model.pt> format=onnx|torchscript "
                        "[output=<file>]")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="download or check datasets")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = data.add_parser("download", help="download, verify and extract a dataset")
    d.add_argument("dataset", choices=["mvtec_ad", "visa", "kolektorsdd", "cifar10", "dagm"])
    d.add_argument("--root", help="target folder (default datasets/<dataset>)")
    d.set_defaults(func=cmd_data_download)
    d = data.add_parser("check", help="report which categories are present, missing or corrupt")
    d.add_argument("dataset")
    d.add_argument("--root", help="dataset folder (default: the dataset config's root)")
    d.add_argument("--deep", action="store_true", help="also decode every image and mask")
    d.set_defaults(func=cmd_data_check)

    p = sub.add_parser("list", help="list methods, datasets and categories")
    p.add_argument("what", nargs="?", choices=["methods", "datasets", "categories"])
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_list)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from anomaly_freq.config import explain_config, explained_yaml

    cfg, sources = explain_config(args.overrides)
    if args.print_config or args.cfg:
        print(explained_yaml(cfg, sources), end="")
        return 0
    from anomaly_freq.run.engine import launched_rank, run  # after the config: a typo fails fast

    lead = launched_rank() == 0  # DDP ranks other than 0 print nothing
    if lead:
        console.print(f"afreq run: method=[bold]{cfg.method.name}[/] dataset=[bold]"
                      f"{cfg.dataset.name}[/] category={escape(str(cfg.dataset.category))} "
                      f"seed={cfg.seed}{_setting_note(cfg)}")
        console.print(_run_header(cfg), highlight=False, soft_wrap=True)
    results = run(cfg)
    if lead:
        _print_results(results, cfg)
    return 0


def _setting_note(cfg) -> str:
    from anomaly_freq.run.unified import UNIFIED, requested, setting_of

    if setting_of(cfg) != UNIFIED:
        return ""
    chosen = requested(cfg.dataset.category)
    if chosen != "all" and len(chosen) == 1:
        return (f" setting={UNIFIED} [yellow](one category: the model sees what a per-category "
                f"run sees; the result is recorded as {UNIFIED})[/]")
    return f" setting={UNIFIED} (one model for all the categories, each scored apart)"


#: the values that decide what a run's numbers mean, shown before it starts
PROTOCOL_KEYS = ("dataset.image_size", "dataset.resize", "dataset.mask_rule", "dataset.shots",
                 "trainer.max_epochs", "eval.resolution", "eval.normalisation",
                 "metrics.pro_variant", "eval.calibration")


def _run_header(cfg) -> str:
    from omegaconf import OmegaConf

    from anomaly_freq.config import preset_chain

    values = " ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in PROTOCOL_KEYS)
    return f"  preset {' ← '.join(preset_chain('method', cfg.method.preset))}: {values}"


def _print_results(results, cfg) -> None:
    unified = cfg.dataset.setting == "unified"
    table = Table(title=f"{cfg.method.name} on {cfg.dataset.name}"
                  + (": one unified model, each category scored apart" if unified else ""))
    for column in ("category", "group", "image AUROC", "pixel AUROC", "run folder"):
        table.add_column(column, justify="right" if "AUROC" in column else "left",
                         overflow="fold")

    def fmt(value):
        return "—" if value is None else f"{value:.4f}"

    for r in results:
        table.add_row(r.category, r.group, fmt(r.metrics.get("image_auroc")),
                      fmt(r.metrics.get("pixel_auroc")), str(r.run_dir))
    if len(results) > 1:
        means = [_mean([r.metrics.get(k) for r in results]) for k in ("image_auroc", "pixel_auroc")]
        table.add_row("mean", "", *map(fmt, means), "", style="bold")
    console.print(table)


def cmd_spectrum(args: argparse.Namespace) -> int:
    from anomaly_freq.config import load_config
    from anomaly_freq.run.spectrum import spectrum_command

    out = spectrum_command(load_config(args.overrides))
    console.print(f"spectrum.png and spectrum.csv written to {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anomaly_freq.run.sweep import run_sweep

    summary = run_sweep(Path(args.file), args.executor, args.jobs, args.dry_run, console,
                        devices_per_job=args.devices_per_job)
    console.print(summary)
    if "stopped_by" in summary:
        return 128 + signal.Signals[summary["stopped_by"]]  # as the shell reports a signal
    return 1 if summary.get("failed") else 0


def cmd_results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anomaly_freq.run.results import group_runs, results_table
    from anomaly_freq.run.store import load_results

    frame = load_results(Path(args.root))
    if args.export:
        out = Path(args.export)
        rows = group_runs(frame).rows if args.grouped else frame
        if out.suffix == ".parquet":
            try:
                rows.to_parquet(out, index=False)
            except ImportError as err:
                raise AfreqError("Parquet export needs pyarrow: pip install pyarrow") from err
        elif out.suffix == ".csv":
            rows.to_csv(out, index=False)
        else:
            raise AfreqError(f"--export {out}: use a .csv or .parquet file name")
        console.print(f"{len(rows)} rows written to {out}")
        return 0
    if frame.empty:
        console.print(f"no finished runs under {args.root}")
        return 0
    console.print(results_table(group_runs(frame), args.root))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.sweep and args.sweep_option and args.sweep != args.sweep_option:
        raise AfreqError(f"two sweep files ({args.sweep}, --sweep {args.sweep_option}): give one")
    sweep = args.sweep or args.sweep_option
    root = Path(args.root) if args.root else None
    out = Path(args.out) if args.out else None
    if sweep:
        from anomaly_freq.run.grid_table import write_sweep_table

        markdown, csv = write_sweep_table(Path(sweep), root, out)
        console.print(f"wrote {markdown} and {csv}", highlight=False)
        return 0
    from anomaly_freq.run.store import load_results
    from anomaly_freq.run.tables import write_tables

    root = root or Path("runs")
    out = out or root / "tables"
    files = sorted(p for p in Path(args.experiments).glob("*/*.yaml"))
    written = write_tables(files, load_results(root), out, Path(args.experiments) / "published")
    console.print(f"wrote {len(written)} tables to {out}/ (Markdown, LaTeX, CSV)",
                  highlight=False)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anomaly_freq.run.predict import describe, predict_folder

    allowed = {"checkpoint", "images", "method", "output"}
    settings = dict(item.partition("=")[::2] for item in args.settings)
    unknown = set(settings) - allowed
    if unknown or not {"checkpoint", "images"} <= settings.keys():
        got = " ".join(args.settings)
        raise AfreqError("afreq predict takes checkpoint=<run folder or model.pt> "
                         "images=<folder> and optionally method=<name> output=<folder> "
                         f"(got {got})")
    result = predict_folder(Path(settings["checkpoint"]), Path(settings["images"]),
                            Path(settings["output"]) if settings.get("output") else None,
                            settings.get("method"))
    for line in describe(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"scores and heatmaps written to {result.out_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anomaly_freq.run.export import export_checkpoint

    settings = dict(item.partition("=")[::2] for item in args.settings)
    if set(settings) - {"checkpoint", "format", "output"} or not {"checkpoint",
                                                                  "format"} <= settings.keys():
        raise AfreqError("afreq export takes checkpoint=<run folder or model.pt> "
                         "format=onnx|torchscript and optionally output=<file> (got "
                         f"{' '.join(args.settings)})")
    done = export_checkpoint(Path(settings["checkpoint"]), settings["format"],
                             Path(settings["output"]) if settings.get("output") else None)
    meta, parity = done.metadata, done.metadata["parity"]
    console.print(f"wrote {done.path} ({meta['exporter']}) and {done.metadata_path.name}; on "
                  f"{parity['images']} random images it gives predict_step's maps to "
                  f"{parity['max_map_difference']:.2g} and scores to "
                  f"{parity['max_score_relative_difference']:.2g} (relative)",
                  highlight=False, soft_wrap=True)
    _, channels, height, width = meta["input"]["shape"]
    console.print(f"input: float32 RGB N×{channels}×{height}×{width} in [0, 1]; outputs: "
                  f"{', '.join(meta['outputs'])}. Score images with: afreq predict "
                  f"checkpoint={done.path} images=<folder>", highlight=False, soft_wrap=True)
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anomaly_freq.data.download import download_dataset

    root = Path(args.root or f"datasets/{args.dataset}")
    download_dataset(args.dataset, root)
    console.print(f"{args.dataset} is ready in {root}; run with dataset={args.dataset} "
                  f"dataset.root={root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from anomaly_freq.config import load_config
    from anomaly_freq.data.check import check_dataset

    overrides = [f"dataset={args.dataset}"] + ([f"dataset.root={args.root}"] if args.root else [])
    table, ok = check_dataset(load_config(overrides), deep=args.deep)
    console.print(table)
    return 0 if ok else 1


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def cmd_list(args: argparse.Namespace) -> int:
    from anomaly_freq.config import load_config

    what = args.what
    if what in (None, "methods"):
        console.print("methods:  " + ", ".join(registry.list_methods()))
    if what in (None, "datasets"):
        console.print("datasets: " + ", ".join(registry.list_datasets()))
    if what in (None, "categories"):
        names = ([load_config(args.overrides).dataset.name] if what or args.overrides
                 else registry.list_datasets())
        for name in names:
            cfg = load_config([f"dataset={name}", *[o for o in args.overrides
                                                    if not o.startswith("dataset=")]])
            try:
                line = _found_categories(registry.create_dataset(name, cfg))
            except AfreqError as err:
                line = f"(unavailable: {err})"
            console.print(f"categories of {name}: {line}", highlight=False)
    return 0


def _found_categories(source) -> str:
    """The categories on disk, then those known but not found there."""
    present = source.present()
    missing = [c for c in source.categories() if c not in present]
    if not missing:
        return ", ".join(present)
    if not present:
        return f"none under {source.root()} (known: {', '.join(missing)})"
    return f"{', '.join(present)} (under {source.root()}); not found: {', '.join(missing)}"


if __name__ == "__main__":
    sys.exit(main())
