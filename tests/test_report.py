"""The report stage: figures from small made-up inputs, their errors, and `snakemake --report` on the demo run."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import run_snakemake
from workflow_scripts.report import report_data_stats
from workflow_scripts.report import report_plots
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.report.report_inputs import read_benchmark, read_numeric_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}svg"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def run_files(tmp_path):
    steps = "step,consumed_samples,loss,lr,grad_norm,tokens_per_s,step_time_s\n" + "".join(
        f"{s},{8 * s},{3.0 / s:.4f},0.001,1.0,{1000 + s},{0.5 + s / 100}\n" for s in range(1, 21))
    evals = "step,samples_count,eval_loss\n10,80,0.98\n20,160,0.91\n"
    metrics = {"workload": "lora", "seed": 7, "status": "success", "target": 0.925, "tokens_per_s": 1010.5,
               "quality_metric": "eval_loss"}
    return (_write(tmp_path / "steps.csv", steps), _write(tmp_path / "eval.csv", evals),
            _write(tmp_path / "metrics.json", json.dumps(metrics)))


def _svg_texts(path: Path) -> str:
    root = ElementTree.parse(path).getroot()
    assert root.tag == SVG
    return path.read_text()


def test_loss_plot_is_a_valid_deterministic_svg_with_the_target(run_files, tmp_path):
    steps, evals, metrics = run_files
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    report_plots.plot_loss(steps, evals, metrics, first)
    report_plots.plot_loss(steps, evals, metrics, second)
    text = _svg_texts(first)
    assert first.read_bytes() == second.read_bytes()  # no dates, fixed ids: equal inputs give equal files
    assert "target 0.925" in text and "lora seed 7 (success)" in text


def test_loss_plot_leaves_out_a_zero_target_and_writes_png(run_files, tmp_path):
    steps, evals, metrics = run_files
    metrics.write_text(json.dumps({"workload": "pretrain", "seed": 1, "status": "aborted", "target": 0.0}))
    svg, png = tmp_path / "loss.svg", tmp_path / "loss.png"
    report_plots.plot_loss(steps, evals, metrics, svg)
    report_plots.plot_loss(steps, evals, metrics, png)
    assert "target" not in _svg_texts(svg)
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_malformed_steps_csv_names_file_line_and_column(run_files, tmp_path):
    steps, evals, metrics = run_files
    lines = steps.read_text().splitlines()
    lines[3] = "3,24,oops,0.001,1.0,1003,0.53"
    steps.write_text("\n".join(lines) + "\n")
    with pytest.raises(PipelineInputError, match=rf"{re.escape(str(steps))}: line 4: column 'loss': not a number"):
        report_plots.plot_loss(steps, evals, metrics, tmp_path / "loss.svg")
    assert not (tmp_path / "loss.svg").exists()


def test_missing_column_and_empty_run_are_refused(run_files, tmp_path):
    steps, evals, metrics = run_files
    evals.write_text("step,eval_loss\n1,0.5\n")
    with pytest.raises(PipelineInputError, match=rf"{re.escape(str(evals))}: line 1: header lacks column\(s\) samples_count"):
        report_plots.plot_loss(steps, evals, metrics, tmp_path / "loss.svg")
    steps.write_text("step,consumed_samples,loss,lr,grad_norm,tokens_per_s,step_time_s\n")
    with pytest.raises(PipelineInputError, match="no training steps"):
        report_plots.plot_throughput(steps, metrics, tmp_path / "t.svg")


def test_cli_exits_2_with_one_line_for_bad_input(run_files, tmp_path, capsys):
    steps, evals, metrics = run_files
    metrics.write_text("{not json")
    code = report_plots.main(["loss", "--steps", str(steps), "--evals", str(evals), "--metrics", str(metrics),
                              "--out", str(tmp_path / "loss.svg")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {metrics}: not valid JSON (line 1, column 2)"


def test_throughput_and_parity_figures(run_files, tmp_path):
    steps, _, metrics = run_files
    report_plots.plot_throughput(steps, metrics, tmp_path / "t.svg")
    assert "mean 1,010 tokens/s" in _svg_texts(tmp_path / "t.svg")  # 1010.5 rounds half to even
    parity = _write(tmp_path / "parity.json", json.dumps(
        {"max_abs_diff": 3.2e-6, "mean_abs_diff": 0.0, "tolerance": 1e-4, "passed": True, "argmax_agreement": 1.0}))
    report_plots.plot_parity(parity, tmp_path / "p.svg")
    text = _svg_texts(tmp_path / "p.svg")
    assert "3.20e-06" in text and "gate 0.0001" in text and "passed" in text


def test_data_statistics_rows_and_packing_efficiency(tmp_path):
    c4 = _write(tmp_path / "c4-train.en_0_text_document.stats.json", json.dumps({"documents": 10, "tokens": 900}))
    gov = _write(tmp_path / "train.stats.json", json.dumps({"rows": 3, "tokens": 1536}))
    packed_dir = tmp_path / "packed"
    packed_dir.mkdir()
    packed = _write(packed_dir / "train.stats.json",
                    json.dumps({"kept_examples": 5, "tokens": 1536, "dropped_remainder_tokens": 512}))
    uc_dir = tmp_path / "uc"
    uc_dir.mkdir()
    uc = _write(uc_dir / "test.stats.json",
                json.dumps({"conversations": 4, "rows": 2, "tokens_in": 600, "tokens_packed": 512}))
    orca = _write(tmp_path / "stats.json", json.dumps(
        {"sampled": 4, "tok_input_length_mean": 10.25, "tok_output_length_mean": 5.5}))
    rows = report_data_stats.collect([str(c4)], [str(gov)], [str(packed)], [str(uc)], [str(orca)])
    assert report_data_stats.to_csv(rows).splitlines() == [
        "dataset,split,documents,rows,tokens,packing_efficiency",
        "c4,train.en_0,10,,900,",
        "govreport,train,5,3,1536,0.75",
        "ultrachat,test,4,2,512,0.853333",
        "openorca,sampled,4,4,63,",
    ]
    report_plots.plot_data_stats(rows, tmp_path / "data.svg")
    assert "govreport train" in _svg_texts(tmp_path / "data.svg")
    uc.write_text(json.dumps({"conversations": 4}))
    with pytest.raises(PipelineInputError, match=rf"{re.escape(str(uc))}: lacks key\(s\) rows, tokens_in"):
        report_data_stats.collect([], [], [], [str(uc)], [])


def test_benchmark_tsv_mean_wall_time_and_peak_memory(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    tsv = _write(tmp_path / "train_lora_seed1.tsv",
                 header + "10.0\t0:00:10\t300.5\t1\t1\t1\t0\t0\t0\t1\n14.0\t0:00:14\tNA\t1\t1\t1\t0\t0\t0\t1\n")
    row = read_benchmark(tsv)
    assert (row.job, row.wall_s, row.max_rss_mb, row.repeats) == ("train_lora_seed1", 12.0, 300.5, 2)
    other = _write(tmp_path / "a_rule.tsv", header + "1.5\t0:00:01\t20\t1\t1\t1\t0\t0\t0\t1\n")
    out = tmp_path / "bench.svg"
    assert report_plots.main(["benchmarks", "--dir", str(tmp_path), "--out", str(out)]) == 0
    text = _svg_texts(out)
    assert text.index("a_rule") < text.index("train_lora_seed1")  # sorted by job name
    _write(tmp_path / "empty.tsv", header)
    with pytest.raises(PipelineInputError, match="empty.tsv: benchmark file has no measurement rows"):
        read_benchmark(tmp_path / "empty.tsv")
    assert read_numeric_table(other, ("s",), delimiter="\t") == {"s": [1.5]}


def test_score_table_html_escapes_cells(tmp_path):
    table = _write(tmp_path / "scores.csv", "workload,note\nlora,<b>&x\n")
    report_plots.csv_to_html(table, tmp_path / "scores.html", "Score table")
    page = (tmp_path / "scores.html").read_text()
    assert "<th>workload</th><th>note</th>" in page and "<td>&lt;b&gt;&amp;x</td>" in page


def _report_variable(page: str, name: str) -> dict:
    """The JSON that report.html assigns to `var <name> = {...};` on one line."""
    line = next(line for line in page.splitlines() if line.strip().startswith(f"var {name} = {{"))
    return json.loads(line.strip().removeprefix(f"var {name} = ").removesuffix(";"))


def test_demo_report_holds_scores_and_every_figure(demo_run, tmp_path):
    """`snakemake --report report.zip` on the demo run: the score table and each figure, with categories and labels."""
    out = tmp_path / "report.zip"
    run_snakemake(demo_run, "--report", str(out), timeout=600)
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        page = archive.read("report/report.html").decode()
    results = _report_variable(page, "results")
    categories = _report_variable(page, "categories")
    expected = {  # path -> (category, workload, seed)
        "results/scores/scores.csv": ("Scores", "all", "all"),
        "results/scores/scores.md": ("Scores", "all", "all"),
        "results/report/scores/scores.html": ("Scores", "all", "all"),
        "results/report/convert/parity.svg": ("Conversion", "conversion", "1234"),
        "results/report/data/statistics.svg": ("Data", "all", "-"),
        "results/report/data/statistics.csv": ("Data", "all", "-"),
        "results/report/benchmarks/rules.svg": ("Benchmarks", "all", "-"),
    }
    for workload, seed in (("lora", "1234"), ("pretrain", "1234"), ("sft", "100")):
        for figure in ("loss", "throughput"):
            expected[f"results/report/train/{workload}/seed{seed}/{figure}.svg"] = ("Training", workload, seed)
    for path, (category, workload, seed) in expected.items():
        assert path in results, f"report lacks {path}; it has {sorted(results)}"
        entry = results[path]
        assert (entry["labels"]["workload"], entry["labels"]["seed"]) == (workload, seed), path
        assert entry["caption"].strip(), path
        assert f"report/{entry['data_uri']}" in names, path
        assert any(path in files for files in categories[category].values()), (path, category)
        if path.endswith(".svg"):
            assert entry["mime_type"] == "image/svg+xml"
    assert sorted(categories["Training"]) == ["lora", "pretrain", "sft"]
    scores = (demo_run / "results/report/scores/scores.html").read_text()
    assert "<th>workload</th>" in scores and "<td>lora</td>" in scores and "<td>llama2-70b-99</td>" in scores
