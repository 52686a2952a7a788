"""The study report: OUT/report.md with its tables as CSVs and its figures as PNGs in OUT/report/.

It reads only the results folder (layout in docs and `spine_keras/study/run.py`): study.json, each fold's bundle
(`metrics` of the best epoch), history.csv and timing.json, each variant's predictions/<split>/metrics.csv and
timing.json, the cubes, and the lists named in study.json for the overlay images. Unfinished parts are left out
and said so; nothing is recomputed from the models.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras import outputs
from spine_keras.bundle import METADATA_NAME, read_bundle
from spine_keras.errors import CaseError, UserError
from spine_keras.io import atomic_path, parse_list, read_volume
from spine_keras.preprocess import LabelMap
from spine_keras.study import figures

CASE_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("hd95_mm", "HD95 mm"), ("assd_mm", "ASSD mm"))
LOWER_IS_BETTER = {"hd95_mm", "assd_mm"}
SPLITS = ("val", "test")
GLOBAL_ROWS = (("mean IoU without background", "val_miou_nobg"), ("mean IoU with background", "val_miou"))


@dataclasses.dataclass
class Results:
    """What a results folder holds, read once."""

    out: Path
    study: dict[str, Any]
    class_names: list[str]
    runs: dict[str, list[Path]]  # variant -> its finished fold folders (with a bundle)
    cases: dict[str, dict[str, list[dict[str, Any]]]]  # split -> variant -> metrics.csv rows

    @property
    def name(self) -> str:
        return str(self.study.get("name") or self.out.name)

    @property
    def variants(self) -> list[str]:
        return sorted(set(self.runs) | {v for split in self.cases.values() for v in split})

    @property
    def primary_split(self) -> str:
        """The split that ranks the variants: the test set when one was predicted, else the validation cases."""
        return "test" if self.cases.get("test") else "val"

    def mode(self, variant: str) -> str:
        """'2d' or '3d': from the first fold's bundle, else the variant name's prefix."""
        if self.runs.get(variant):
            return read_bundle(self.runs[variant][0]).mode
        return variant.split("-")[0]


def _number(text: str | None) -> float:
    """A CSV cell as a float; empty (undefined) is NaN."""
    return float(text) if text not in (None, "") else math.nan


def read_metrics_csv(path: Path, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """A predictions metrics.csv: numbers as floats (empty = NaN), the class as its name (ids are translated)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        name = row["class"]
        if name not in class_names and name.isdigit() and int(name) < len(class_names):
            row["class"] = class_names[int(name)]
        for key, _ in CASE_METRICS:
            row[key] = _number(row.get(key))
        row["seconds"] = _number(row.get("seconds"))
    return rows


def read_history(path: Path) -> dict[str, np.ndarray]:
    """A Keras CSVLogger history as float columns (empty = NaN)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([_number(r[key]) for r in rows]) for key in (rows[0] if rows else {})}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} when the file is absent (an unfinished step)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_results(out: Path) -> Results:
    """Read study.json, the finished folds and the prediction metrics of a results folder."""
    if not (out / "study.json").is_file():
        raise UserError(f"'{out}' is not a study results folder (no study.json); run spine-study first")
    study = read_json(out / "study.json")
    runs = {
        folder.name: sorted(f for f in folder.glob("fold_*") if (f / METADATA_NAME).is_file())
        for folder in sorted((out / "runs").glob("*"))
        if folder.is_dir()
    }
    runs = {variant: folds for variant, folds in runs.items() if folds}
    names = study.get("classes") or (list(read_bundle(next(iter(runs.values()))[0]).class_names) if runs else [])
    if not names:
        raise UserError(f"'{out / 'study.json'}' names no classes and no fold has finished; nothing to report")
    cases: dict[str, dict[str, list[dict[str, Any]]]] = {split: {} for split in SPLITS}
    for path in sorted((out / "predictions").glob("*/*/metrics.csv")):
        if path.parent.name in cases:
            cases[path.parent.name][path.parent.parent.name] = read_metrics_csv(path, names)
    return Results(out, study, list(names), runs, cases)


# Tables.


def fold_iou_rows(results: Results) -> list[dict[str, Any]]:
    """The paper's table: per-class then global IoU of the epoch each fold kept, mean and std over folds per variant."""
    from spine_keras.metrics import metric_key  # the log-key spelling training used

    keys = [(name, f"val_iou_{metric_key(name)}") for name in results.class_names] + list(GLOBAL_ROWS)
    metrics = {v: [read_bundle(f).metrics for f in folds] for v, folds in results.runs.items()}
    rows = []
    for label, key in keys:
        row: dict[str, Any] = {"row": label}
        for variant, folds in metrics.items():
            values = np.array([float(m.get(key, math.nan)) for m in folds])
            values = values[~np.isnan(values)]
            row[variant] = float(values.mean()) if values.size else math.nan
            row[f"{variant}_std"] = float(values.std()) if values.size else math.nan
            row[f"{variant}_folds"] = int(values.size)
        rows.append(row)
    return rows


def case_summary_rows(results: Results) -> list[dict[str, Any]]:
    """Per split, variant, class and metric: cases, missing (undefined) values, mean, median, worst and its case."""
    rows = []
    for split, by_variant in results.cases.items():
        for variant, cases in sorted(by_variant.items()):
            for name in results.class_names:
                mine = [r for r in cases if r["class"] == name]
                rows += [_summary(split, variant, name, key, mine) for key, _ in CASE_METRICS if mine]
    return rows


def list_summary_rows(results: Results) -> list[dict[str, Any]]:
    """The held-out (val) summary rows once more, per training list, when the study trains on several lists: a
    model trained on two sequences is judged on each (a good mean can hide one list it fails on)."""
    owner = training_list_of(results)
    names = sorted(set(owner.values()))
    if len(names) < 2:
        return []
    rows = []
    for variant, cases in sorted(results.cases.get("val", {}).items()):
        for source in names:
            for name in results.class_names:
                mine = [r for r in cases if r["class"] == name and owner.get(r["case"]) == source]
                if mine:
                    rows += [{"list": source, **_summary("val", variant, name, key, mine)} for key, _ in CASE_METRICS]
    return rows


def training_list_of(results: Results) -> dict[str, str]:
    """case id -> the file name of the training list that holds it (from the lists named in study.json)."""
    sources = [source["list"] for source in (results.study.get("data") or {}).get("train") or []]
    names = [Path(path).name for path in sources]
    if len(set(names)) < len(names):  # two lists of the same file name: tell them apart by their paths
        names = sources
    owner = {}
    for path, name in zip(sources, names):
        for entry in parse_list(_study_path(results, path)):
            owner[entry.case_id] = name
    return owner


def _summary(split: str, variant: str, name: str, key: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary row: statistics over the cases whose value is defined."""
    defined = [r for r in rows if not math.isnan(r[key])]
    values = np.array([r[key] for r in defined])
    pick = max if key in LOWER_IS_BETTER else min
    worst = pick(defined, key=lambda r: r[key]) if defined else None
    return {
        "split": split,
        "variant": variant,
        "class": name,
        "metric": key,
        "cases": len(rows),
        "missing": len(rows) - len(defined),
        "mean": float(values.mean()) if defined else math.nan,
        "median": float(np.median(values)) if defined else math.nan,
        "worst": worst[key] if worst else math.nan,
        "worst_case": worst["case"] if worst else "",
    }


def case_scores(rows: Iterable[dict[str, Any]], background: str) -> dict[str, float]:
    """Per case: Dice averaged over the foreground classes whose Dice is defined (cases with none are left out)."""
    per_case: dict[str, list[float]] = {}
    for row in rows:
        if row["class"] != background and not math.isnan(row["dice"]):
            per_case.setdefault(row["case"], []).append(row["dice"])
    return {case: float(np.mean(values)) for case, values in per_case.items()}


def split_scores(results: Results, split: str) -> dict[str, dict[str, float]]:
    """variant -> case -> foreground-mean Dice on one split."""
    background = results.class_names[0]
    return {v: case_scores(rows, background) for v, rows in sorted(results.cases.get(split, {}).items())}


def best_variant(scores: Mapping[str, Mapping[str, float]]) -> str | None:
    """The variant with the highest mean per-case Dice (the first by name on a tie); None without scores."""
    means = {v: float(np.mean(list(s.values()))) for v, s in scores.items() if s}
    return max(sorted(means), key=lambda v: means[v]) if means else None


def wilcoxon_rows(scores: dict[str, dict[str, float]], best: str | None, split: str) -> list[dict[str, Any]]:
    """The best variant against each other one: paired Wilcoxon signed-rank test on per-case Dice."""
    if best is None or len(scores) < 2:
        return []
    from spine_keras.study.stats import paired_wilcoxon

    return [{"split": split, **row} for row in paired_wilcoxon(scores, best=best)]


def cost_rows(results: Results) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per fold: training seconds, epochs, peak RSS; per variant: those summarized plus inference cost)."""
    folds, variants = [], []
    for variant in results.variants:
        timings = [(f.name, read_json(f / "timing.json")) for f in results.runs.get(variant, [])]
        folds += [{"variant": variant, "fold": name, **_train_cost(t)} for name, t in timings]
        seconds = np.array([_train_cost(t)["train_seconds"] for _, t in timings if t])
        inference = read_json(results.out / "predictions" / variant / "timing.json")
        variants.append(
            {
                "variant": variant,
                "folds": len(seconds),
                "train_seconds_mean": float(seconds.mean()) if seconds.size else math.nan,
                "train_seconds_std": float(seconds.std()) if seconds.size else math.nan,
                "train_seconds_total": float(seconds.sum()) if seconds.size else math.nan,
                "train_peak_rss_mb": max((_train_cost(t)["peak_rss_mb"] for _, t in timings if t), default=math.nan),
                "seconds_per_volume": float(inference.get("seconds_per_volume", math.nan)),
                "predict_peak_rss_mb": float(inference.get("peak_rss_mb", math.nan)),
            }
        )
    return folds, variants


def _train_cost(timing: Mapping[str, Any]) -> dict[str, float]:
    return {
        "train_seconds": float(timing.get("train_seconds", math.nan)),
        "epochs": float(timing.get("epochs", math.nan)),
        "peak_rss_mb": float(timing.get("peak_rss_mb", math.nan)),
    }


# Markdown.


def _cell(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Lines of a Markdown table (floats to 4 decimals, NaN as n/a)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def fold_iou_markdown(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> list[str]:
    """The paper's table: rows = classes then global IoUs, columns = variants, cells 'mean ± std'."""

    def cell(row: dict[str, Any], v: str) -> str:
        mean, std, n = row[v], row[f"{v}_std"], row[f"{v}_folds"]
        return _cell(mean) if n < 2 else f"{_cell(mean)} ± {_cell(std)}"

    folds = ", ".join(f"{v} {rows[0][f'{v}_folds']}" for v in variants)
    header = ["IoU"] + list(variants)
    lines = markdown_table(header, ([r["row"]] + [cell(r, v) for v in variants] for r in rows))
    return lines + ["", f"Folds per variant: {folds}; std is the population standard deviation over folds."]


def case_markdown(summary: Sequence[dict[str, Any]], split: str) -> list[str]:
    """Per variant and class: mean / median / worst of each metric, and how many values were undefined."""
    grouped: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in summary:
        if row["split"] == split:
            grouped.setdefault((row["variant"], row["class"]), {})[row["metric"]] = row
    header = ["variant", "class", "cases"] + [f"{label} mean / median / worst" for _, label in CASE_METRICS]
    lines = []
    for (variant, name), by_metric in grouped.items():
        cells = [" / ".join(_cell(by_metric[k][s], 3) for s in ("mean", "median", "worst")) for k, _ in CASE_METRICS]
        missing = [f"{label} {by_metric[k]['missing']}" for k, label in CASE_METRICS if by_metric[k]["missing"]]
        lines.append([variant, name, by_metric["dice"]["cases"], *cells, ", ".join(missing) or "0"])
    return markdown_table(header + ["missing"], lines)


def wilcoxon_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The test table and how to read it."""
    header = ["best", "vs", "cases", "median difference", "mean difference", "statistic", "p-value", "note"]
    keys = ("variant", "vs", "n", "median_difference", "mean_difference", "statistic", "p_value", "note")
    lines = markdown_table(header, ([r.get(k, "") for k in keys] for r in rows))
    return lines + [
        "",
        "How to read: the difference is best minus other, per case (Dice averaged over the foreground classes); "
        "p >= 0.05: the difference may be noise. With few cases no p-value can be small.",
    ]


def cost_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    header = ["variant", "folds", "train s per fold (mean ± std)", "train s total", "train peak RSS MB"]
    header += ["inference s per volume", "inference peak RSS MB"]
    return markdown_table(
        header,
        (
            [r["variant"], r["folds"], f"{_cell(r['train_seconds_mean'], 1)} ± {_cell(r['train_seconds_std'], 1)}"]
            + [_cell(r[k], 1) for k in ("train_seconds_total", "train_peak_rss_mb")]
            + [_cell(r["seconds_per_volume"], 2), _cell(r["predict_peak_rss_mb"], 1)]
            for r in rows
        ),
    )


def hardware_line(study: Mapping[str, Any]) -> str:
    """'Hardware: CPU (N cores), GPU, M GB memory.'"""
    hw = study.get("hardware") or {}
    gpu = hw.get("gpu") or "no GPU"
    cpu, cores, memory = hw.get("cpu", "unknown CPU"), hw.get("cores", "?"), hw.get("memory_gb", "?")
    return f"Hardware: {cpu} ({cores} cores), {gpu}, {memory} GB memory."


def versions_line(study: Mapping[str, Any]) -> str:
    """'Versions: spine_keras 1.0, tensorflow 2.21, ...' from study.json."""
    versions = study.get("versions") or {}
    return "Versions: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "not recorded") + "."


def command_line(results: Results) -> str:
    """The command that makes these results: the study file (study.json's `source`) and this folder."""
    return f"spine-study {results.study.get('source', 'STUDY.yaml')} -o {results.out}"


# Figures: data for the overlays.


def case_sources(results: Results, split: str) -> dict[str, tuple[Path, Path | None, str | None]]:
    """case id -> (image, label, label map) from the lists named in study.json (the test list for 'test')."""
    data = results.study.get("data") or {}
    sources = [data.get("test")] if split == "test" else list(data.get("train") or [])
    found = {}
    for source in filter(None, sources):
        for entry in parse_list(_study_path(results, source["list"])):
            found[entry.case_id] = (entry.image, entry.label, source.get("label_map"))
    return found


def _study_path(results: Results, path: str) -> Path:
    """A path from study.json (absolute there; else relative to the study file's folder, `source`, or to OUT)."""
    candidate = Path(path)
    bases = [Path(results.study["source"]).parent] if results.study.get("source") else []
    for base in [*bases, results.out]:
        if not candidate.is_absolute() and (base / candidate).exists():
            return base / candidate
    return candidate


def pick_cases(scores: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """(role, case, score) of the best, median and worst case by score (fewer when there are fewer cases)."""
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    picks = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    seen, chosen = set(), []
    for role, (case, score) in picks.items():
        if case not in seen:
            seen.add(case)
            chosen.append((role, case, score))
    return chosen


def shown_variants(results: Results, scores: Mapping[str, Mapping[str, float]], best: str) -> list[str]:
    """The best variant and, when the other mode was predicted too, that mode's best variant; 2D first."""
    mode = results.mode(best)
    others = {v: s for v, s in scores.items() if results.mode(v) != mode}
    partner = best_variant(others)
    return sorted([best] + ([partner] if partner else []), key=results.mode)


def case_view(results: Results, split: str, pick: tuple[str, str, float], variants: Sequence[str]) -> figures.CaseView:
    """The middle sagittal slice (axis 2) of a case's image, truth and each variant's predicted segmentation."""
    role, case, score = pick
    sources = case_sources(results, split)
    if case not in sources or sources[case][1] is None:
        raise UserError(f"case {case} (with its label) is not in the {split} list(s) named in study.json")
    image_path, label_path, label_map = sources[case]
    image, label = read_volume(image_path), read_volume(label_path)
    truth = LabelMap.parse(label_map).apply(label.array, len(results.class_names))
    middle = image.shape[2] // 2
    predictions = {
        v: read_volume(results.out / "predictions" / v / split / f"{case}_seg.nrrd").array[:, :, middle]
        for v in variants
    }
    aspect = float(image.spacing[0]) / float(image.spacing[1])
    image_slice = image.array[:, :, middle] if image.channels == 1 else image.array[:, :, middle, 0]
    return figures.CaseView(role, case, score, image_slice, truth[:, :, middle], predictions, aspect)


# The report.


@dataclasses.dataclass
class Section:
    """A part of report.md: a heading, Markdown lines, figures (title, png) to embed."""

    heading: str
    lines: list[str]
    figures: list[tuple[str, Path]] = dataclasses.field(default_factory=list)


def write_report(out_dir: Path) -> Path:
    """Write OUT/report.md, OUT/report/*.csv and OUT/report/*.png from a study results folder; returns report.md."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    folder = out_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    split = results.primary_split
    scores = split_scores(results, split)
    best = best_variant(scores)
    sections = [
        _iou_section(results, folder),
        _case_section(results, folder),
        _wilcoxon_section(scores, best, split, folder),
        _cost_section(results, folder),
        _figure_section(results, scores, best, split, folder),
    ]
    lines = [
        f"# Study {results.name}: results",
        "",
        hardware_line(results.study),
        "",
        f"Command: `{command_line(results)}`",
        "",
        versions_line(results.study),
    ]
    lines += ["", f"Ranking split: {split}; best variant (highest mean per-case Dice without background): {best}."]
    for section in sections:
        lines += ["", f"## {section.heading}", *([""] + section.lines if section.lines else [])]
        for title, png in section.figures:
            lines += ["", f"![{title}]({png.relative_to(out_dir).as_posix()})"]
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _iou_section(results: Results, folder: Path) -> Section:
    if not results.runs:
        return Section("Validation IoU per class (the epoch each fold kept)", ["No fold has finished."])
    rows = fold_iou_rows(results)
    outputs.write_csv(rows, list(rows[0]), folder / "iou_folds.csv")
    lines = fold_iou_markdown(rows, list(results.runs))
    return Section("Validation IoU per class, mean ± std over folds (the epoch each fold kept: `keep`)", lines)


def _case_section(results: Results, folder: Path) -> Section:
    summary = case_summary_rows(results)
    header = ["split", "variant", "class", "metric", "cases", "missing", "mean", "median", "worst", "worst_case"]
    outputs.write_csv(summary, header, folder / "case_metrics.csv")
    lines = []
    for split in SPLITS:
        if results.cases.get(split):
            lines += [f"### {figures.SPLIT_NAMES[split].capitalize()}", "", *case_markdown(summary, split), ""]
    try:
        by_list = list_summary_rows(results)
    except (UserError, CaseError, OSError) as exc:  # a list moved since the study ran: the rest still reports
        by_list, lines = [], [*lines, f"Not split by training list ({exc}).", ""]
    if by_list:
        outputs.write_csv(by_list, ["list", *header], folder / "case_metrics_by_list.csv")
        for source in sorted({row["list"] for row in by_list}):
            mine = [row for row in by_list if row["list"] == source]
            lines += [f"### {figures.SPLIT_NAMES['val'].capitalize()}, training list {source}", ""]
            lines += [*case_markdown(mine, "val"), ""]
    note = "Original geometry; HD95 and ASSD in mm. Worst = lowest Dice/IoU, highest distance. Missing = undefined"
    note += " (a distance when the prediction or the truth is empty for that class)."
    return Section("Per case, per class", (lines or ["No predictions yet."]) + [note])


def _wilcoxon_section(scores: dict[str, dict[str, float]], best: str | None, split: str, folder: Path) -> Section:
    rows = wilcoxon_rows(scores, best, split)
    heading = f"Best variant against the others ({split} cases, paired Wilcoxon signed-rank)"
    if not rows:
        return Section(heading, ["Fewer than two variants were predicted; nothing to compare."])
    header = ["split", "variant", "vs", "n", "median_difference", "mean_difference", "statistic", "p_value"]
    header += [key for key in rows[0] if key not in header]
    outputs.write_csv(rows, header, folder / "wilcoxon.csv")
    return Section(heading, wilcoxon_markdown(rows))


def _cost_section(results: Results, folder: Path) -> Section:
    folds, variants = cost_rows(results)
    outputs.write_csv(folds, ["variant", "fold", "train_seconds", "epochs", "peak_rss_mb"], folder / "train_time.csv")
    outputs.write_csv(variants, list(variants[0]) if variants else ["variant"], folder / "cost.csv")
    return Section("Cost", [hardware_line(results.study), "", *cost_markdown(variants)])


def _figure_section(
    results: Results, scores: dict[str, dict[str, float]], best: str | None, split: str, folder: Path
) -> Section:
    """Every figure that its inputs allow; the ones that cannot be drawn are named with the reason."""
    section = Section("Figures", [])
    for title, draw in _figure_plan(results, scores, best, split, folder):
        try:
            section.figures.append((title, draw()))
        except (UserError, CaseError, OSError) as exc:
            section.lines.append(f"- {title}: not drawn ({exc})")
    return section


def _figure_plan(results: Results, scores: dict[str, dict[str, float]], best: str | None, split: str, folder: Path):
    """(title, drawing function) of each figure whose inputs exist."""
    name, plan = results.name, []
    histories = {
        v: [read_history(f / "history.csv") for f in folds if (f / "history.csv").is_file()]
        for v, folds in results.runs.items()
    }
    if any(histories.values()):
        plan.append(("Training curves", partial(figures.training_curves, histories, name, folder / "curves.png")))
    if scores:
        boxes = partial(figures.dice_boxes, _class_scores(results, split), results.class_names, name, split)
        plan.append(("Per-case Dice", partial(boxes, folder / "dice_boxes.png")))
    if best is not None and scores.get(best):
        plan.append(("Best, median and worst case", partial(_overlay_figure, results, scores, best, split, folder)))
    cubes = sorted((results.out / "cubes").glob("*/cube.h5"))
    if cubes:
        plan.append(("Cube montage", partial(figures.cube_montage, cubes[0], name, folder / "cube_montage.png")))
        sheet = partial(figures.augmentation_sheet, cubes[0], name, folder / "augmentation.png")
        plan.append(("Augmentation sheet", sheet))
    return plan


def _class_scores(results: Results, split: str) -> dict[str, dict[str, list[float]]]:
    """variant -> class -> per-case Dice on one split."""
    found: dict[str, dict[str, list[float]]] = {}
    for variant, rows in sorted(results.cases.get(split, {}).items()):
        for row in rows:
            found.setdefault(variant, {}).setdefault(row["class"], []).append(row["dice"])
    return found


def _overlay_figure(results: Results, scores: dict[str, dict[str, float]], best: str, split: str, folder: Path) -> Path:
    variants = shown_variants(results, scores, best)
    views = [case_view(results, split, pick, variants) for pick in pick_cases(scores[best])]
    title = f"study {results.name}: best, median and worst {split} case of {best} (middle sagittal slice)"
    return figures.case_overlays(views, results.class_names, title, folder / "cases.png")
