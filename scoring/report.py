"""The benchmark's human-readable outputs: ``scores.md`` and ``report.html`` with PNG plots.

Everything here is a pure function of the ``scores.json`` dictionary that
`inference.benchmark.benchmark` writes, so a report can be rebuilt from a saved file
(`write_report`). Plots use matplotlib's Agg backend (no display needed). A report on synthetic
folders (``scores["synthetic"]``) says so in its title and sets no paper number or Δ beside its
scores: they check the pipeline, not the model.
"""

from __future__ import annotations

import html
from pathlib import Path

from scoring.unibench import DATASETS

# The paper's headline MER-UniBench numbers (x100).
PAPER: dict[str, float] = {
    "MER2023": 78.54,
    "MER2024": 78.80,
    "IEMOCAPFour": 60.54,
    "MELD": 55.65,
    "CMUMOSI": 81.30,
    "CMUMOSEI": 80.90,
    "SIMS": 88.49,
    "SIMSv2": 86.18,
    "OVMERDPlus": 62.52,
}
PAPER_MEAN = 74.77
DATASET_METRICS = {name: ds.metric for name, ds in DATASETS.items()}
METRIC_NAMES = {"hit_rate": "hit rate", "sentiment": "WAF", "ov": "EW F-score"}
SYNTHETIC_TITLE = "MER-UniBench on synthetic data"
SYNTHETIC_NOTE = ("Synthetic folders (`affectflow synth-unibench`): these scores check the pipeline end to end; "
                  "they are not MER-UniBench results and are not comparable with the paper's.")
# report.html's column is COLUMN_PX wide; plots are drawn at most PLOT_MAX_INCHES x DPI pixels wide so
# they fit it at their own size (the page's CSS also scales an image down to a narrower window).
COLUMN_PX = 960
DPI = 100
PLOT_MAX_INCHES = 9.0


def _with_paper(scores: dict) -> bool:
    return not scores.get("synthetic")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def summary_rows(scores: dict) -> list[dict]:
    """One row per scored dataset: metric, each model's score, the best, the paper's number."""
    rows = []
    models = scores["models"]
    for ds in scores["datasets"]:
        if ds in scores.get("skipped", {}):
            continue
        best = scores["best"][ds]
        per_model = {m: models[m]["datasets"][ds]["score"] for m in scores["model_order"]}
        rows.append({
            "dataset": ds,
            "metric": models[best["checkpoint"]]["datasets"][ds]["metric"],
            "models": per_model,
            "best": best["score"],
            "best_model": best["checkpoint"],
            "paper": PAPER[ds] / 100 if _with_paper(scores) else None,
        })
    return rows


def markdown(scores: dict) -> str:
    """``scores.md``: our score (x100) per dataset beside the paper's, then the mean (synthetic
    data: a title saying so, and no paper column)."""
    order = scores["model_order"]
    multi = len(order) > 1
    paper = _with_paper(scores)
    head = ["dataset", "metric"] + ([f"`{m}`" for m in order] + ["best"] if multi else ["ours"])
    if paper:
        head += ["paper", "Δ"]
    lines = [f"# {SYNTHETIC_TITLE}", ""] if not paper else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = summary_rows(scores)
    for r in rows:
        cells = [r["dataset"], METRIC_NAMES[r["metric"]]]
        if multi:
            cells += [_pct(r["models"][m]) for m in order] + [_pct(r["best"])]
        else:
            cells += [_pct(r["best"])]
        if paper:
            cells += [_pct(r["paper"]), f"{100 * (r['best'] - r['paper']):+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        mean = scores["mean"]
        cells = [f"mean ({len(rows)} sets)", ""]
        if multi:
            cells += [_pct(scores["models"][m]["mean"]) for m in order] + [_pct(mean["best"])]
        else:
            cells += [_pct(mean["best"])]
        if paper:
            cells += [_pct(mean["paper"]), f"{100 * (mean['best'] - mean['paper']):+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if paper:
        notes = [
            "",
            f"Scores ×100. Paper: AffectGPT (ICML 2025) MER-UniBench headline; its mean over all "
            f"nine sets is {PAPER_MEAN:.2f}, the mean above is over the sets scored here.",
        ]
    else:
        notes = ["", f"Scores ×100. {SYNTHETIC_NOTE}"]
    if scores.get("sentiment") == "rules" and any(
        DATASET_METRICS.get(ds) == "sentiment" for ds in scores["datasets"] if ds not in scores.get("skipped", {})
    ):
        from scoring.sentiment import agreement_note

        notes.append("Sentiment sets: label lists mapped to positive/negative/neutral by the valence rules and "
                     f"calibrated weights ({agreement_note()}).")
    if multi:
        notes.append("best: per dataset, the best of the checkpoints above "
                     "(`select_best_checkpoint`, ties to the earliest).")
    for ds, reason in sorted(scores.get("skipped", {}).items()):
        notes.append(f"- {ds} skipped: {reason}")
    notes += [f"- {line}" for line in labeling_notes(scores)]
    return "\n".join(lines + notes) + "\n"


def labeling_notes(scores: dict) -> list[str]:
    """One line per (model, dataset) where outputs failed or were free text scored as empty, and
    where labels came from run-on outputs, spotted words or the LLM extractor."""
    from scoring.evaluate import extraction_notes

    out = []
    for m in scores["model_order"]:
        for ds, result in scores["models"][m]["datasets"].items():
            lab = result.get("labeling", {})
            if lab.get("failed") or lab.get("unparsed"):
                out.append(f"{ds} / {m}: of {lab['n']} samples, {lab['failed']} failed to label "
                           f"and {lab['unparsed']} were free text without an extractor; "
                           "both scored as empty predictions")
            out += [f"{ds} / {m}: {line}" for line in extraction_notes(result)
                    if "valence rules" not in line]  # the rules path is stated once, above
    return out


def plot_bars(scores: dict, path: Path) -> None:
    """Per-dataset bars: our best score beside the paper's (synthetic data: ours alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = summary_rows(scores)
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(min(PLOT_MAX_INCHES, max(4.0, 0.75 * len(rows) + 2)), 3.6), dpi=DPI)
    if _with_paper(scores):
        ax.bar(x - 0.2, [100 * r["best"] for r in rows], 0.4, label="ours (best)", color="#3b75af")
        ax.bar(x + 0.2, [100 * r["paper"] for r in rows], 0.4, label="paper", color="#c0c0c0")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title("MER-UniBench")
    else:
        ax.bar(x, [100 * r["best"] for r in rows], 0.5, label="best", color="#3b75af")
        ax.set_title(SYNTHETIC_TITLE)
    ax.set_xticks(x, [r["dataset"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("score ×100")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def plot_confusion(confusion: dict, title: str, path: Path) -> None:
    """Counts of gold class (rows) vs the mapped first predicted label (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion["matrix"], dtype=float)
    gold, pred = confusion["gold"], confusion["pred"]
    fig, ax = plt.subplots(figsize=(min(PLOT_MAX_INCHES, 1.0 + 0.7 * len(pred)), 1.0 + 0.6 * len(gold)), dpi=DPI)
    ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1.0, m.max()))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(pred)), pred, rotation=45, ha="right")
    ax.set_yticks(range(len(gold)), gold)
    ax.set_xlabel("predicted (first label)")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _html_table(scores: dict) -> str:
    order = scores["model_order"]
    paper = _with_paper(scores)
    head = ["dataset", "metric"] + order + ["best"] + (["paper"] if paper else [])
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in summary_rows(scores):
        cells = [r["dataset"], METRIC_NAMES[r["metric"]]]
        cells += [_pct(r["models"][m]) for m in order] + [_pct(r["best"])]
        cells += [_pct(r["paper"])] if paper else []
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(scores: dict, out: str | Path) -> dict[str, Path]:
    """Write ``scores.md``, ``report.html`` and its PNGs (``plots/``) under ``out``."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / "scores.md", "html": out / "report.html"}
    written["markdown"].write_text(markdown(scores), encoding="utf-8")
    images: list[tuple[str, str]] = []
    if summary_rows(scores):
        plot_bars(scores, plots / "bars.png")
        written["bars"] = plots / "bars.png"
        images.append(("plots/bars.png", "Our best score per dataset beside the paper's" if _with_paper(scores)
                       else "Best score per dataset (synthetic data)"))
    for ds in scores["datasets"]:
        best = scores["best"].get(ds)
        if best is None:
            continue
        confusion = scores["models"][best["checkpoint"]]["datasets"][ds].get("confusion")
        if confusion is None:
            continue
        png = plots / f"confusion_{ds}.png"
        plot_confusion(confusion, f"{ds} — {best['checkpoint']}", png)
        written[f"confusion_{ds}"] = png
        images.append((f"plots/{png.name}", f"{ds}: gold vs first predicted label "
                                            f"({confusion['rule']})"))
    skipped = "".join(
        f"<li>{html.escape(ds)}: {html.escape(reason)}</li>"
        for ds, reason in sorted(scores.get("skipped", {}).items())
    ) + "".join(f"<li>{html.escape(line)}</li>" for line in labeling_notes(scores))
    figures = "\n".join(
        f'<figure><img src="{src}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}'
        f"</figcaption></figure>" for src, cap in images
    )
    mean = scores.get("mean", {})
    title = "MER-UniBench report" if _with_paper(scores) else f"{SYNTHETIC_TITLE}: report"
    if _with_paper(scores):
        summary = (f"Scores ×100; the paper's mean over all nine sets is {PAPER_MEAN:.2f} (ours over the sets "
                   f"scored here: {_pct(mean.get('best'))}, paper over the same sets: {_pct(mean.get('paper'))}).")
    else:
        summary = (f"Scores ×100; mean over the sets scored here: {_pct(mean.get('best'))}. "
                   f"{html.escape(SYNTHETIC_NOTE.replace('`', ''))}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:{COLUMN_PX}px;margin:2em auto;overflow-wrap:anywhere}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
figure{{display:inline-block;max-width:100%;margin:1em 0}}img{{max-width:100%;height:auto}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Models: {html.escape(", ".join(scores["model_order"]))}. Task: {html.escape(scores["task"])},
seed {scores["seed"]}. {summary}</p>
{_html_table(scores)}
{f"<h2>Notes</h2><ul>{skipped}</ul>" if skipped else ""}
<h2>Plots</h2>
{figures}
</body></html>
"""
    written["html"].write_text(page, encoding="utf-8")
    return written


def results_markdown(summary: dict) -> str:
    """The table of `scoring.results.score_results`: one row per checkpoint (scores ×100, the best
    per dataset in bold), then the best row and, on real data, the paper's numbers and Δ."""
    from scoring.metrics import checkpoint_epoch as _epoch

    datasets = list(summary["datasets"])
    checkpoints = sorted({c for d in datasets for c in summary["datasets"][d]["checkpoints"]},
                         key=lambda c: (_epoch(c) if _epoch(c) is not None else -1, c))
    best = summary["best"]
    synthetic = bool(summary.get("synthetic"))
    head = ["checkpoint", "epoch"] + datasets + ["mean"]
    lines = [f"# {SYNTHETIC_TITLE}", ""] if synthetic else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in checkpoints:
        cells = [f"`{c}`", str(_epoch(c))]
        values = []
        for d in datasets:
            result = summary["datasets"][d]["checkpoints"].get(c)
            if result is None:
                cells.append("—")
                continue
            values.append(result["score"])
            text = _pct(result["score"])
            cells.append(f"**{text}**" if best.get(d, {}).get("checkpoint") == c else text)
        cells.append(_pct(sum(values) / len(values)) if len(values) == len(datasets) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    epochs = summary.get("epochs")
    label = "best (all epochs)" if epochs is None else f"best (epochs {min(epochs)}–{max(epochs)})"
    cells = [label, ""] + [_pct(best[d]["score"]) if d in best else "—" for d in datasets]
    cells.append(_pct(summary.get("mean")) if not summary.get("missing_best") else "—")
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["best epoch", ""] + [str(best[d]["epoch"]) if d in best else "—" for d in datasets] + [""]
    lines.append("| " + " | ".join(cells) + " |")
    if not synthetic:
        lines.append("| " + " | ".join(["paper", ""] + [f"{PAPER[d]:.2f}" for d in datasets] + [""]) + " |")
        lines.append("| " + " | ".join(["Δ", ""] + [f"{100 * best[d]['score'] - PAPER[d]:+.2f}" if d in best else "—"
                                                      for d in datasets] + [""]) + " |")
    by_metric: dict[str, list[str]] = {}
    for d in datasets:
        by_metric.setdefault(METRIC_NAMES[DATASET_METRICS[d]], []).append(d)
    metrics_text = "; ".join(f"{m}: {', '.join(ds)}" for m, ds in by_metric.items())
    notes = ["", f"Scores ×100 ({metrics_text}). Best: `select_best_checkpoint`, ties to the earliest epoch."]
    if synthetic:
        notes.append(SYNTHETIC_NOTE)
    for d in summary.get("missing_best", []):
        notes.append(f"- {d}: no checkpoint of epochs {min(epochs)}–{max(epochs)} (use --all-epochs)")
    if summary.get("sentiment") == "rules" and any(DATASET_METRICS[d] == "sentiment" for d in datasets):
        from scoring.sentiment import agreement_note

        notes.append("- Sentiment sets: the release's label lists mapped to positive/negative/neutral by the "
                     f"valence rules and calibrated weights ({agreement_note()}).")
    return "\n".join(lines + notes) + "\n"
