"""Box-and-strip plot of per-case Dice per trainer (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

MAX_CLASS_PANEL = 8  # a per-class panel is drawn when the dataset has 2..MAX_CLASS_PANEL foreground classes

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _wrap(trainer: str) -> str:
    """nnUNetTrainerLMNet -> 'nnUNetTrainer\nLMNet' so that long trainer names fit under a box."""
    if trainer.startswith("nnUNetTrainer") and len(trainer) > len("nnUNetTrainer"):
        return "nnUNetTrainer\n" + trainer[len("nnUNetTrainer"):]
    return trainer


def _box_and_points(ax, data: list, positions: list[float], colors: list[str], width: float, rng) -> None:
    import numpy as np

    finite = [np.asarray(d, float)[np.isfinite(np.asarray(d, float))] for d in data]
    keep = [i for i, d in enumerate(finite) if d.size]
    if keep:
        bp = ax.boxplot([finite[i] for i in keep], positions=[positions[i] for i in keep], widths=width,
                        showfliers=False, patch_artist=True, medianprops={"color": "black", "linewidth": 1.5},
                        whiskerprops={"color": "#444444"}, capprops={"color": "#444444"})
        for patch, i in zip(bp["boxes"], keep):
            patch.set_facecolor(colors[i])
            patch.set_alpha(0.35)
            patch.set_edgecolor(colors[i])
    for i, d in enumerate(finite):
        if d.size:
            x = positions[i] + rng.uniform(-width * 0.32, width * 0.32, size=d.size)
            ax.scatter(x, d, s=12, color=colors[i], alpha=0.75, linewidths=0, zorder=3)
            ax.scatter([positions[i]], [float(np.mean(d))], marker="D", s=30, color="white", edgecolors="black",
                       linewidths=1.0, zorder=4)


def plot_dice_per_case(per_case, trainers: list[str], class_keys: list[str], class_labels: dict[str, str],
                       title: str, out_file: Path) -> None:
    """per_case: DataFrame with columns trainer, case, class, Dice (class 'mean' = per-case foreground mean)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(trainers))]
    with_classes = 2 <= len(class_keys) <= MAX_CLASS_PANEL
    widths = [max(3.2, 1.5 * len(trainers) + 1.0)]
    if with_classes:
        widths.append(max(4.0, 0.6 + len(class_keys) * (0.45 * len(trainers) + 0.4)))
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths) + 0.6, 5.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    ax = axes[0, 0]

    means = per_case[per_case["class"] == "mean"]
    data = [means.loc[means["trainer"] == t, "Dice"].to_numpy(float) for t in trainers]
    positions = list(range(len(trainers)))
    _box_and_points(ax, data, positions, colors, 0.6, rng)
    ns = [int(np.isfinite(d).sum()) for d in data]
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{_wrap(t)}\n(n={n})" for t, n in zip(trainers, ns)], fontsize=9)
    ax.set_xlim(-0.6, len(trainers) - 0.4)
    ax.set_ylabel("Dice per case (mean over foreground classes)")
    ax.set_xlabel("trainer")
    ax.set_title("All foreground classes" if len(class_keys) > 1 else
                 f"{class_labels.get(class_keys[0], class_keys[0]) if class_keys else ''}")
    ax.grid(axis="y", alpha=0.3)

    if with_classes:
        ax2 = axes[0, 1]
        group_w = 0.8
        bw = group_w / len(trainers)
        for ti, t in enumerate(trainers):
            sub = per_case[per_case["trainer"] == t]
            d = [sub.loc[sub["class"] == k, "Dice"].to_numpy(float) for k in class_keys]
            pos = [ci - group_w / 2 + bw * (ti + 0.5) for ci in range(len(class_keys))]
            _box_and_points(ax2, d, pos, [colors[ti]] * len(class_keys), bw * 0.85, rng)
        ax2.set_xticks(range(len(class_keys)))
        ax2.set_xticklabels([class_labels.get(k, k) for k in class_keys], rotation=20 if len(class_keys) > 4 else 0,
                            ha="right" if len(class_keys) > 4 else "center")
        ax2.set_xlim(-0.6, len(class_keys) - 0.4)
        ax2.set_xlabel("class")
        ax2.set_ylabel("Dice per case")
        ax2.set_title("Per class")
        ax2.grid(axis="y", alpha=0.3)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.6) for c in colors]
        ax2.legend(handles, trainers, loc="best", fontsize=8, framealpha=0.9)

    lo = np.nanmin(per_case["Dice"].to_numpy(float)) if per_case["Dice"].notna().any() else 0.0
    for a in axes[0]:
        a.set_ylim(max(-0.02, min(lo - 0.05, 0.9)), 1.02)
    fig.suptitle(title + "\nbox: quartiles, line: median, diamond: mean, dots: cases", fontsize=11)
    fig.tight_layout()
    from ..report_output import atomic_path

    with atomic_path(out_file) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
