"""Figures of the Snakemake report (`snakemake --report report.html`), one per concern, from the files the stages
write. Output format follows the file suffix (.svg or .png); the bytes depend only on the inputs (no dates, fixed SVG
ids), so a rerun on the same inputs gives the same file.

    python -m workflow_scripts.report.report_plots loss --steps S.csv --evals E.csv --metrics M.json --out loss.svg
    python -m workflow_scripts.report.report_plots throughput --steps S.csv --metrics M.json --out throughput.svg
    python -m workflow_scripts.report.report_plots parity --parity parity.json --out parity.svg
    python -m workflow_scripts.report.report_plots data-stats --c4 ... --govreport ... [--govreport-packed ...]
        --ultrachat ... --openorca ... --out data.svg --out-csv data.csv
    python -m workflow_scripts.report.report_plots benchmarks --out benchmarks.svg [--dir results/benchmarks/rules] [TSV...]
    python -m workflow_scripts.report.report_plots table-html --csv scores.csv --title TITLE --out scores.html
"""
from __future__ import annotations

import argparse
import html
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from workflow_scripts.report import report_data_stats  # noqa: E402
from workflow_scripts.core.atomic import atomic_open  # noqa: E402
from workflow_scripts.core.cli import run_main  # noqa: E402
from workflow_scripts.core.errors import PipelineInputError  # noqa: E402
from workflow_scripts.report.report_inputs import BenchmarkRow, read_benchmarks, read_json, read_numeric_table  # noqa: E402

log = logging.getLogger("report_plots")
FORMATS = {".svg": "svg", ".png": "png"}
# Parity values of exactly 0 (bit-identical logits) cannot sit on a log axis; they are drawn at this floor.
LOG_FLOOR = 1e-12

matplotlib.rcParams.update({"svg.hashsalt": "mlperf-llm-pipeline", "figure.dpi": 100, "font.size": 9})


def save_figure(fig: Figure, out: Path | str) -> None:
    """Write atomically; metadata without dates or versions so that equal inputs give equal bytes."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix)
    if fmt is None:
        raise PipelineInputError(f"{out}: unsupported figure format (use {' or '.join(FORMATS)})")
    metadata = {"Date": None, "Creator": None} if fmt == "svg" else {"Software": None}
    fig.tight_layout()
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format=fmt, metadata=metadata)
    plt.close(fig)


def _run_title(metrics: dict[str, Any]) -> str:
    return f"{metrics.get('workload', '?')} seed {metrics.get('seed', '?')} ({metrics.get('status', '?')})"


def plot_loss(steps: Path | str, evals: Path | str, metrics: Path | str, out: Path | str) -> None:
    """Train loss over consumed samples, the evaluation points, and the quality target where the run has one."""
    train = read_numeric_table(steps, ("consumed_samples", "loss"))
    if not train["loss"]:
        raise PipelineInputError(f"{steps}: no training steps to plot")
    evaluated = read_numeric_table(evals, ("samples_count", "eval_loss"))
    run = read_json(metrics, ("workload",))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(train["consumed_samples"], train["loss"], lw=1, label="train loss")
    if evaluated["eval_loss"]:
        quality = run.get("quality_metric") or "eval loss"
        ax.plot(evaluated["samples_count"], evaluated["eval_loss"], "o-", ms=4, label=quality.replace("_", " "))
    target = run.get("target")
    if target is not None and target > 0:  # 0 marks "no target" (demo recipes that run a fixed number of steps)
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:g}")
    ax.set(xlabel="consumed samples", ylabel="loss", title=f"Loss: {_run_title(run)}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out)


def plot_throughput(steps: Path | str, metrics: Path | str, out: Path | str) -> None:
    """Tokens per second and step time over steps, with the run's mean tokens/s."""
    table = read_numeric_table(steps, ("step", "tokens_per_s", "step_time_s"))
    if not table["step"]:
        raise PipelineInputError(f"{steps}: no training steps to plot")
    run = read_json(metrics, ("workload",))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(table["step"], table["tokens_per_s"], lw=1)
    mean = run.get("tokens_per_s")
    if mean is not None:
        top.axhline(mean, color="tab:gray", ls="--", lw=1, label=f"mean {mean:,.0f} tokens/s")
        top.legend()
    top.set(ylabel="tokens/s", title=f"Throughput: {_run_title(run)}")
    bottom.plot(table["step"], table["step_time_s"], lw=1, color="tab:orange")
    bottom.set(xlabel="step", ylabel="step time (s)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    save_figure(fig, out)


def plot_parity(parity: Path | str, out: Path | str) -> None:
    """Max and mean |logit difference| HF vs megatron-core against the conversion gate."""
    report = read_json(parity, ("max_abs_diff", "mean_abs_diff", "tolerance", "passed"))
    names = ["max |diff|", "mean |diff|"]
    values = [max(float(report[k]), LOG_FLOOR) for k in ("max_abs_diff", "mean_abs_diff")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, values, color=["tab:blue", "tab:cyan"])
    ax.bar_label(bars, labels=[f"{float(report[k]):.2e}" for k in ("max_abs_diff", "mean_abs_diff")])
    ax.axhline(report["tolerance"], color="tab:red", ls="--", lw=1, label=f"gate {report['tolerance']:g}")
    ax.set_yscale("log")
    verdict = "passed" if report["passed"] else "FAILED"
    extra = f" (argmax agreement {report['argmax_agreement']:.3f})" if "argmax_agreement" in report else ""
    ax.set(ylabel="|logit difference| HF vs megatron-core", title=f"Conversion parity: {verdict}{extra}")
    ax.legend()
    save_figure(fig, out)


def plot_data_stats(rows: Sequence[report_data_stats.DataRow], out: Path | str) -> None:
    """Documents, tokens and packing efficiency per data set and split, as horizontal bars."""
    if not rows:
        raise PipelineInputError("data statistics: no stats files given")
    names = [f"{r.dataset} {r.split}" for r in rows]
    panels = (
        ("documents", [r.documents or 0 for r in rows], "{:,.0f}"),
        ("tokens", [r.tokens for r in rows], "{:,.0f}"),
        ("packing efficiency", [r.packing_efficiency or 0 for r in rows], "{:.3f}"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.35 * len(rows) + 1.5), sharey=True)
    for ax, (title, values, fmt) in zip(axes, panels):
        bars = ax.barh(names, values)
        ax.bar_label(bars, labels=[fmt.format(v) if v else "n/a" for v in values], fontsize=7)
        ax.set_title(title)
        ax.margins(x=0.25)
    axes[0].invert_yaxis()
    axes[2].set_xlim(0, 1.3)
    save_figure(fig, out)


def plot_benchmarks(rows: Sequence[BenchmarkRow], out: Path | str) -> None:
    """Wall time and peak memory of every benchmarked job (the `benchmark:` TSVs of the slow rules)."""
    if not rows:
        raise PipelineInputError("rule benchmarks: no benchmark files given")
    names = [r.job for r in rows]
    fig, (wall, rss) = plt.subplots(1, 2, figsize=(11, 0.3 * len(rows) + 1.5), sharey=True)
    bars = wall.barh(names, [r.wall_s for r in rows])
    wall.bar_label(bars, labels=[f"{r.wall_s:,.1f}" for r in rows], fontsize=7)
    wall.set(xlabel="wall time (s)", title="wall time per job")
    rss.barh(names, [0 if math.isnan(r.max_rss_mb) else r.max_rss_mb for r in rows], color="tab:orange")
    rss.set(xlabel="max RSS (MB)", title="peak memory per job")
    wall.margins(x=0.15)
    wall.invert_yaxis()
    for ax in (wall, rss):
        ax.grid(axis="x", alpha=0.3)
    save_figure(fig, out)


def csv_to_html(csv_path: Path | str, out: Path | str, title: str) -> None:
    """A CSV as a standalone HTML table: the report shows HTML inline, a CSV only as a download."""
    import csv

    with open(csv_path, newline="") as handle:
        table = list(csv.reader(handle))
    if not table:
        raise PipelineInputError(f"{csv_path}: empty table")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    style = ("table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#eee}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<table>\n<tr>{head}</tr>\n{body}\n</table>\n</body></html>\n")
    with atomic_open(out, "w") as handle:
        handle.write(page)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    loss = sub.add_parser("loss")
    loss.add_argument("--steps", required=True)
    loss.add_argument("--evals", required=True)
    loss.add_argument("--metrics", required=True)
    loss.add_argument("--out", required=True)
    throughput = sub.add_parser("throughput")
    throughput.add_argument("--steps", required=True)
    throughput.add_argument("--metrics", required=True)
    throughput.add_argument("--out", required=True)
    parity = sub.add_parser("parity")
    parity.add_argument("--parity", required=True)
    parity.add_argument("--out", required=True)
    data = sub.add_parser("data-stats")
    for name in ("c4", "govreport", "govreport-packed", "ultrachat", "openorca"):
        data.add_argument(f"--{name}", nargs="*", default=[])
    data.add_argument("--out", required=True)
    data.add_argument("--out-csv", required=True)
    bench = sub.add_parser("benchmarks")
    bench.add_argument("--out", required=True)
    bench.add_argument("--dir", help="also every *.tsv in this folder (results/benchmarks/rules)")
    bench.add_argument("tsv", nargs="*")
    table = sub.add_parser("table-html")
    table.add_argument("--csv", required=True)
    table.add_argument("--title", required=True)
    table.add_argument("--out", required=True)
    return parser


def _body(argv: Sequence[str] | None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "loss":
        plot_loss(args.steps, args.evals, args.metrics, args.out)
    elif args.command == "throughput":
        plot_throughput(args.steps, args.metrics, args.out)
    elif args.command == "parity":
        plot_parity(args.parity, args.out)
    elif args.command == "data-stats":
        rows = report_data_stats.collect(args.c4, args.govreport, args.govreport_packed, args.ultrachat, args.openorca)
        with atomic_open(args.out_csv, "w") as handle:
            handle.write(report_data_stats.to_csv(rows))
        plot_data_stats(rows, args.out)
    elif args.command == "benchmarks":
        found = sorted(str(p) for p in Path(args.dir).glob("*.tsv")) if args.dir else []
        plot_benchmarks(read_benchmarks([*args.tsv, *found]), args.out)
    else:
        csv_to_html(args.csv, args.out, args.title)
    log.info("wrote %s", args.out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
