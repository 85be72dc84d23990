"""Top-1 against the fraction of labels used (the axes of the paper's Figure 1), shared by the
main job's `results.png` and the semi-supervised benchmark's plot."""

from __future__ import annotations

from simclrv2.atomic_files import replacing


def label_fraction_axes(figsize):
    """A new (figure, axes) on the Agg backend (no display needed) and pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax, plt


def save_label_fraction_plot(fig, ax, path, *, xlabel: str, title: str, title_size: float,
                             legend_size: float, ylabel: str = "test top-1 (%)") -> None:
    """Log axis at 1% / 10% / 100%, labels, grid and legend; written atomically, then closed."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xticks([1, 10, 100])
    ax.set_xticklabels(["1%", "10%", "100%"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right")
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
