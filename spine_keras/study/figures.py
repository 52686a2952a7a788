"""The study report's figures (small PNGs, each titled with the study): training curves of every variant, per-case
Dice boxes, best/median/worst case overlays (2D beside 3D), the cube montage and an augmentation sheet.

Classes always have their fixed colours (`outputs.class_colour`) and a legend; variants get matplotlib's cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from spine_keras import outputs
from spine_keras.cube import read_attrs
from spine_keras.cube.check import montage

DPI = 80
MISSED_COLOUR = "#00ffff"  # truth foreground the prediction missed or gave another class
EXTRA_COLOUR = "#ff00ff"  # prediction foreground where the truth is background
SPLIT_NAMES = {"val": "validation cases (each by its fold's model)", "test": "test cases (fold ensemble)"}


def variant_colour(index: int) -> str:
    """The colour of the index-th variant in multi-variant charts (matplotlib's default cycle)."""
    return f"C{index % 10}"


def training_curves(
    histories: Mapping[str, Sequence[Mapping[str, np.ndarray]]], study: str, png: Path, key: str = "val_miou_nobg"
) -> Path:
    """One chart: `key` per epoch for every variant, each fold a thin line and the mean over folds a thick one."""
    plt = outputs.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for index, (variant, folds) in enumerate(histories.items()):
        colour, curves = variant_colour(index), [f for f in folds if key in f and "epoch" in f]
        for fold in curves:
            ax.plot(fold["epoch"] + 1, fold[key], color=colour, linewidth=0.7, alpha=0.35)
        if curves:
            length = max(len(f[key]) for f in curves)
            stacked = np.full((len(curves), length), np.nan)
            for row, fold in enumerate(curves):
                stacked[row, : len(fold[key])] = fold[key]
            with np.errstate(all="ignore"):
                mean = np.nanmean(stacked, axis=0)
            ax.plot(np.arange(1, length + 1), mean, color=colour, linewidth=2, label=f"{variant} ({len(curves)} folds)")
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="epoch", ylabel="validation IoU without background", ylim=(0, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"study {study}: validation IoU without background per epoch\n(thin: each fold, thick: mean over folds)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return outputs.save_figure(fig, png, dpi=DPI)


def dice_boxes(
    scores: Mapping[str, Mapping[str, Sequence[float]]], class_names: Sequence[str], study: str, split: str, png: Path
) -> Path:
    """Per-case Dice per variant: for each variant one box per foreground class (its fixed colour), cases as dots."""
    plt = outputs.pyplot()
    variants, classes = list(scores), [(i, n) for i, n in enumerate(class_names) if i > 0]
    width = 0.8 / len(classes)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(variants) * max(1, len(classes) / 2) + 1.5), 3.8))
    jitter = np.random.default_rng(0)
    for v, variant in enumerate(variants):
        for c, (index, name) in enumerate(classes):
            values = np.asarray(scores[variant].get(name, ()), dtype=float)
            values = values[~np.isnan(values)]
            if not values.size:
                continue
            x = v + (c - (len(classes) - 1) / 2) * width
            box = ax.boxplot(values, positions=[x], widths=width * 0.8, patch_artist=True, showfliers=False)
            box["boxes"][0].set(facecolor=outputs.class_colour(index), alpha=0.5)
            box["medians"][0].set(color="black")
            spread = jitter.uniform(-width * 0.2, width * 0.2, values.size)
            ax.scatter(x + spread, values, s=10, color="black", zorder=3)
    ax.set_xticks(range(len(variants)), variants, fontsize=8)
    ax.set(ylabel="Dice per case", ylim=(0, 1.02), xlim=(-0.6, len(variants) - 0.4))
    ax.set_title(f"study {study}: per-case Dice per variant and class\n{SPLIT_NAMES.get(split, split)}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    outputs.add_class_legend(fig, list(class_names))
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return outputs.save_figure(fig, png, dpi=DPI)


@dataclasses.dataclass
class CaseView:
    """One row of the overlay figure: a case's middle sagittal slice, its truth and each variant's prediction."""

    role: str  # "best", "median", "worst"
    case: str
    score: float  # the case's Dice (mean over foreground classes) for the variant that ranked it
    image: np.ndarray  # 2D slice
    truth: np.ndarray  # 2D class ids
    predictions: dict[str, np.ndarray]  # variant -> 2D class ids
    aspect: float  # pixel height / width in mm


def error_overlay(truth: np.ndarray, prediction: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """RGBA: missed (truth foreground predicted otherwise) in cyan, extra (foreground on background) in magenta."""
    from matplotlib.colors import to_rgb

    rgba = np.zeros(truth.shape + (4,))
    rgba[(truth > 0) & (prediction != truth)] = (*to_rgb(MISSED_COLOUR), alpha)
    rgba[(truth == 0) & (prediction > 0)] = (*to_rgb(EXTRA_COLOUR), alpha)
    return rgba


def case_overlays(views: Sequence[CaseView], class_names: Sequence[str], title: str, png: Path) -> Path:
    """Rows = cases; columns = image, truth, then each variant's prediction and its error overlay."""
    from matplotlib.patches import Patch

    plt = outputs.pyplot()
    variants = list(views[0].predictions)
    cols = 2 + 2 * len(variants)
    fig, axes = plt.subplots(len(views), cols, figsize=(1.9 * cols, 2.1 * len(views) + 1.0), squeeze=False)
    for row, view in enumerate(views):
        panels = [("image", None), ("truth", outputs.label_overlay(view.truth))]
        for variant, prediction in view.predictions.items():
            panels.append((f"{variant} prediction", outputs.label_overlay(prediction)))
            panels.append((f"{variant} error", error_overlay(view.truth, prediction)))
        for ax, (name, overlay) in zip(axes[row], panels):
            ax.imshow(view.image, cmap="gray", aspect=view.aspect)
            if overlay is not None:
                ax.imshow(overlay, interpolation="nearest", aspect=view.aspect)
            label = f"{view.role}: {view.case}\nDice {view.score:.3f}" if name == "image" else name
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    outputs.add_class_legend(fig, list(class_names))
    errors = [Patch(facecolor=MISSED_COLOUR, label="missed"), Patch(facecolor=EXTRA_COLOUR, label="extra")]
    fig.legend(handles=errors, loc="lower right", fontsize=8, frameon=False, ncol=2)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return outputs.save_figure(fig, png, dpi=DPI)


def cube_montage(cube: Path, study: str, png: Path) -> Path:
    """The cube's montage: originals beside augmented copies, classes in their fixed colours."""
    attrs = read_attrs(cube)
    title = f"study {study}: cube {cube.parent.name} ({attrs.get('mode')}), originals and augmented copies"
    return montage(cube, png, title=title)


def _middle(array: np.ndarray) -> np.ndarray:
    """A 2D sample as is; a 3D sample's middle slice along its last axis (as the cube montage shows it)."""
    return array[..., array.shape[-1] // 2] if array.ndim == 3 else array


def _first_original(cube: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The cube's first original (not augmented) sample: image without channel axis, label, case id."""
    with h5py.File(cube, "r") as handle:
        index = int(np.flatnonzero(handle["augmented"][:] == 0)[0])
        return handle["images"][index][..., 0], handle["labels"][index], handle["case_ids"].asstr()[index]


def _augment_config(attrs: Mapping) -> tuple[object, str]:
    """The cube's augmentation settings (attribute `augment`, without `copies`), or the defaults when it has none."""
    from spine_keras.augment import AugmentConfig

    settings = dict(attrs.get("augment") or {})
    copies = settings.pop("copies", 0)
    if not settings:
        return AugmentConfig(), "default settings (the cube records none)"
    return AugmentConfig.from_dict(settings), f"the cube's settings (copies stored: {copies})"


def augmentation_sheet(cube: Path, study: str, png: Path, draws: int = 11, seed: int = 0) -> Path:
    """One original sample of `cube` and `draws` random augmentations of it with the cube's settings."""
    from spine_keras.augment import apply, sample_params

    plt = outputs.pyplot()
    attrs = read_attrs(cube)
    config, origin = _augment_config(attrs)
    image, label, case = _first_original(cube)
    rng = np.random.default_rng(seed)
    samples = [("original", image, label)]
    for _ in range(draws):
        params = sample_params(config, label.shape, rng)
        drawn, drawn_label = apply(image, label, params)
        flip = f" flip {list(params.flip)}" if params.flip else ""
        samples.append((f"rot {params.rotation[0]:+.0f}° zoom {params.zoom[0]:.2f}{flip}", drawn, drawn_label))
    cols = 4
    rows = -(-len(samples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows + 0.9), squeeze=False)
    for ax, (name, drawn, drawn_label) in zip(axes.flat, samples):
        ax.imshow(_middle(drawn), cmap="gray")
        ax.imshow(outputs.label_overlay(_middle(drawn_label)), interpolation="nearest")
        ax.set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    title = f"study {study}: augmentation of {case} ({attrs.get('mode')} cube {cube.parent.name}), {draws} draws"
    fig.suptitle(f"{title}\nwith {origin}", fontsize=9)
    outputs.add_class_legend(fig, list(attrs.get("class_names") or []))
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return outputs.save_figure(fig, png, dpi=DPI)
