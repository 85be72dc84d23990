"""The findings benchmark's figures, drawn from a part's JSON alone (so --report can redraw
them): every row's test top-1 with its standard error (all parts: the head-depth and layer
bars of the paper's Figure 5, the distillation bars of its Figure 6), top-1 against the label
fraction per width (its Figure 1), and the validation curves of the supervised part."""

from __future__ import annotations

import pathlib

from simclrv2.plotting import label_fraction_axes, save_label_fraction_plot


def row_stats(result):
    """{row key: (mean test top-1, standard error or None, seeds)} of a part's JSON."""
    from findings.stats import mean_and_stderr

    values = {}
    for row in result["rows"]:
        if row.get("test_top1") is not None:
            values.setdefault(row["key"], []).append(row["test_top1"])
    return {k: (*mean_and_stderr(v), len(v)) for k, v in values.items()}


def _title(result, what):
    tag = " (SMOKE: proves nothing)" if result.get("smoke") else ""
    return f"{what}: part {result['part']}{tag}"


def bars(result, path):
    stats = row_stats(result)
    fig, ax, plt = label_fraction_axes(figsize=(7.0, 0.32 * len(stats) + 1.6))
    keys = list(stats)
    means = [100 * stats[k][0] for k in keys]
    errors = [100 * (stats[k][1] or 0.0) for k in keys]
    ax.barh(range(len(keys)), means, xerr=errors, color="#4c72b0", capsize=3)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=7)
    ax.invert_yaxis()
    low = min(means) if means else 0
    ax.set_xlim(max(0.0, low - 5), min(100.0, max(means, default=100) + 3))
    ax.set_xlabel("test top-1 (%), mean over seeds +- standard error")
    ax.set_title(_title(result, "every row"), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    _save(fig, plt, path)


def fractions(result, path):
    """Fine-tuned top-1 against the fraction of labels, one line per width, with the
    self-distilled and distilled students at 1%."""
    stats = row_stats(result)
    widths = sorted({k.rsplit(" ", 1)[1] for k in stats if k.startswith("fine-tuned ")},
                    key=lambda w: float(w[:-1]))
    fig, ax, plt = label_fraction_axes(figsize=(6.4, 4.4))
    for w in widths:
        points = [(p, stats.get(f"fine-tuned {p}% {w}")) for p in (1, 10, 100)]
        points = [(p, s) for p, s in points if s]
        line = ax.errorbar([p for p, _ in points], [100 * s[0] for _, s in points],
                           yerr=[100 * (s[1] or 0) for _, s in points], fmt="s-", capsize=3,
                           label=f"{w} SimCLRv2 fine-tuned")
        own = stats.get(f"self-distilled {w}")
        if own:
            ax.errorbar([1], [100 * own[0]], yerr=[100 * (own[1] or 0)], fmt="*",
                        markersize=12, color=line[0].get_color(), label=f"{w} self-distilled")
    for key, s in stats.items():
        if key.startswith("distilled "):
            ax.errorbar([1], [100 * s[0]], yerr=[100 * (s[1] or 0)], fmt="P", color="black",
                        markersize=9, label=key)
    save_label_fraction_plot(fig, ax, path, xlabel="fraction of the labels used",
                             title=_title(result, "top-1 against labels (Figure 1)"),
                             title_size=9, legend_size=7)


def curves(result, path):
    fig, ax, plt = label_fraction_axes(figsize=(6.4, 4.0))
    for key, points in result.get("curves", {}).items():
        ax.plot([p["epochs"] for p in points], [100 * p["validation_top1"] for p in points],
                "o-", label=key)
    ax.set_xscale("log", base=2)
    ticks = sorted({p["epochs"] for points in result.get("curves", {}).values() for p in points})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("epochs of labeled images (each point a run of its own schedule)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(_title(result, "trained until validation stops rising"), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def _save(fig, plt, path):
    from simclrv2.atomic_files import replacing

    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


DRAWINGS = {"bars": bars, "fractions": fractions, "curves": curves}


def kinds_of(result):
    kinds = ["bars"]
    if result["part"] == "widths":
        kinds.append("fractions")
    if result.get("curves"):
        kinds.append("curves")
    return kinds


def draw_all(result, json_path) -> list:
    """Every figure of a part's JSON, beside it; returns their file names."""
    json_path = pathlib.Path(json_path)
    names = []
    for kind in kinds_of(result):
        path = json_path.with_name(f"{json_path.stem}-{kind}.png")
        DRAWINGS[kind](result, path)
        names.append(path.name)
    return names
