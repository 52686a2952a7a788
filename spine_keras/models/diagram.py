"""U-shaped block diagrams of the architectures, drawn from the model factory's own build configuration.

`layout` turns `make_config` (the same validated settings `build_model` builds from) into blocks and links:
encoder levels going down, the bottleneck, decoder levels going up, skips across (with their attention gates),
and the segmentation and deep-supervision heads. `draw` renders a layout with matplotlib. Neither imports Keras,
and nothing here is written per architecture, so a diagram cannot drift from the models it shows.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spine_keras.models.config import FC_SCALE, BuildConfig, level_filters, make_config
from spine_keras.models.registry import ARCHS, VGG16_CONVS

DEFAULT_2D = (256, 256, 1)
KINDS = {  # block kind -> (fill colour, legend label)
    "conv": ("#9ecae1", "conv block (2x conv3-norm-act)"),
    "inception": ("#fdae6b", "inception block (1, 3, 5 kernels + pool)"),
    "vgg": ("#a1d99b", "VGG16 stage"),
    "fc": ("#bcbddc", "fc6-fc7 + class scores"),
    "fuse": ("#fdd0a2", "upsample + add pool scores"),
    "head": ("#eeeeee", "output head (class scores, activation)"),
}
GATE_COLOUR = "#d62728"
PALETTE_COLOURS = 64


@dataclass(frozen=True)
class Block:
    """One box of the diagram: `filters` output channels at `level` (0 = full resolution, each level halves)."""

    name: str
    role: str  # "encoder", "bottom", "decoder" or "head"
    level: int
    filters: int
    kind: str  # a key of KINDS
    detail: str


@dataclass(frozen=True)
class Link:
    """An arrow from block `source` to block `target`."""

    source: str
    target: str
    kind: str  # "down" (pooling), "up" (upsampling), "skip" or "head"
    label: str = ""
    gated: bool = False  # an attention gate weights this skip


@dataclass(frozen=True)
class Layout:
    """Everything a diagram shows about one architecture, as plain data."""

    arch: str
    description: str
    input_shape: tuple[int, ...]
    n_classes: int
    settings: str
    blocks: tuple[Block, ...]
    links: tuple[Link, ...]

    @property
    def rank(self) -> int:
        """Number of spatial axes: 2 or 3."""
        return len(self.input_shape) - 1

    @property
    def levels(self) -> int:
        """Number of encoder levels (resolutions above the bottom block)."""
        return sum(block.role == "encoder" for block in self.blocks)

    @property
    def heads(self) -> list[Block]:
        """Output heads: `seg` first, then the deep-supervision heads `aux_1`.."""
        return sorted((block for block in self.blocks if block.role == "head"), key=lambda block: block.level)

    @property
    def gates(self) -> list[Link]:
        """Skips that pass through an attention gate, finest first."""
        return sorted((link for link in self.links if link.gated), key=lambda link: self.block(link.target).level)

    def block(self, name: str) -> Block:
        """The block called `name`."""
        return next(block for block in self.blocks if block.name == name)

    def side(self, level: int) -> str:
        """Spatial size at `level`, e.g. '64x64' or '16x32x32'."""
        return "x".join(str(side // 2**level) for side in self.input_shape[:-1])


def layout(arch: str, input_shape: Sequence[int] = DEFAULT_2D, n_classes: int = 2, **overrides: Any) -> Layout:
    """The diagram of `arch` as `build_model(arch, input_shape, n_classes, **overrides)` would build it."""
    cfg = make_config(arch, input_shape, n_classes, overrides)
    blocks, links = _fcn_parts(cfg) if cfg.spec.fcn else _unet_parts(cfg)
    settings = (
        f"{cfg.rank}D input {'x'.join(map(str, cfg.input_shape))}, {cfg.n_classes} classes, "
        f"filters {cfg.filters}, depth {cfg.depth}, {cfg.normalization} norm, {cfg.upsampling} upsampling"
    )
    return Layout(cfg.arch, cfg.spec.description, cfg.input_shape, cfg.n_classes, settings, blocks, links)


def _body(cfg: BuildConfig) -> tuple[str, str]:
    """Kind and detail of the U-Net's configured body block (what `unet._block` builds)."""
    return ("inception", "inception 1/3/5+pool") if cfg.spec.multi_kernel else ("conv", "2x conv3")


def _head(cfg: BuildConfig, name: str, level: int) -> Block:
    """An output head reading decoder `level`, upsampled back to full resolution."""
    activation = cfg.final_activation or "logits"
    detail = activation if level == 0 else f"up x{2**level}, {activation}"
    return Block(name, "head", level, cfg.n_classes, "head", detail)


def _unet_parts(cfg: BuildConfig) -> tuple[tuple[Block, ...], tuple[Link, ...]]:
    """Blocks and links of the U-Net family, level by level as `unet.build_unet` builds them."""
    kind, detail = _body(cfg)
    blocks, links = [], []
    for level in range(cfg.depth):
        enc = ("vgg", f"VGG16 {VGG16_CONVS[level]}x conv3") if cfg.spec.vgg else (kind, detail)
        blocks.append(Block(f"enc{level + 1}", "encoder", level, level_filters(cfg, level), *enc))
        blocks.append(Block(f"dec{level + 1}", "decoder", level, level_filters(cfg, level), kind, detail))
        below = f"enc{level + 2}" if level + 1 < cfg.depth else "bottleneck"
        above = f"dec{level + 2}" if level + 1 < cfg.depth else "bottleneck"
        links += [Link(f"enc{level + 1}", below, "down"), Link(above, f"dec{level + 1}", "up")]
        links.append(Link(f"enc{level + 1}", f"dec{level + 1}", "skip", gated=cfg.spec.attention))
        if cfg.deep_supervision and level > 0:
            blocks.append(_head(cfg, f"aux_{level}", level))
            links.append(Link(f"dec{level + 1}", f"aux_{level}", "head"))
    blocks.append(Block("bottleneck", "bottom", cfg.depth, level_filters(cfg, cfg.depth), kind, detail))
    blocks.append(_head(cfg, "seg", 0))
    links.append(Link("dec1", "seg", "head"))
    return tuple(blocks), tuple(links)


def _fcn_parts(cfg: BuildConfig) -> tuple[tuple[Block, ...], tuple[Link, ...]]:
    """Blocks and links of FCN8 as `fcn.build_fcn` builds it: VGG16 stages, fc6-fc7, pool4/pool3 fusion, x8 up."""
    blocks, links = [], []
    for level, convs in enumerate(VGG16_CONVS):
        blocks.append(
            Block(f"enc{level + 1}", "encoder", level, level_filters(cfg, level), "vgg", f"VGG16 {convs}x conv3")
        )
        below = f"enc{level + 2}" if level + 1 < len(VGG16_CONVS) else "fc6-7"
        links.append(Link(f"enc{level + 1}", below, "down"))
    bottom = len(VGG16_CONVS)
    blocks.append(Block("fc6-7", "bottom", bottom, FC_SCALE * cfg.filters, "fc", "conv3, conv1, scores"))
    source = "fc6-7"
    for pool in (4, 3):
        name = f"fuse_pool{pool}"
        blocks.append(Block(name, "decoder", pool, cfg.n_classes, "fuse", f"up x2 + pool{pool} scores"))
        links += [Link(source, name, "up", "x2"), Link(f"enc{pool}", name, "skip", f"pool{pool}")]
        source = name
    blocks.append(Block("seg", "head", 0, cfg.n_classes, "head", f"up x8, {cfg.final_activation or 'logits'}"))
    links.append(Link(source, "seg", "up", "x8"))
    return tuple(blocks), tuple(links)


BOX_W, BOX_H, HEAD_W, STEP = 2.0, 0.64, 1.45, 0.9  # data units; one row per level
MIN_ROWS = 4  # shallower models are drawn at the scale of depth 4
TOP_IN, ROW_IN, BOTTOM_IN = 0.55, 3.85 / 4.9, 0.6  # inches: titles, one level, legend


def _x(role: str, level: int, bottom: int) -> float:
    """Horizontal centre of a block: the encoder steps right going down, the decoder mirrors it, heads sit right."""
    left = 0.2 + BOX_W / 2
    span = BOX_W + 0.7 + 2 * max(bottom - 1, 0) * STEP
    if role == "encoder":
        return left + level * STEP
    if role == "bottom":
        return left + span / 2
    decoder = left + span - level * STEP
    return decoder if role == "decoder" else decoder + BOX_W / 2 + 0.3 + HEAD_W / 2


def _positions(plan: Layout) -> dict[str, tuple[float, float]]:
    """Centre (x, y) of every block; y = -level."""
    bottom = max(block.level for block in plan.blocks)
    return {block.name: (_x(block.role, block.level, bottom), -float(block.level)) for block in plan.blocks}


def _draw_block(ax: Any, plan: Layout, block: Block, centre: tuple[float, float]) -> None:
    """One rounded box: name and channels, the block's detail, and the level's spatial size."""
    from matplotlib.patches import FancyBboxPatch

    width = HEAD_W if block.role == "head" else BOX_W
    x, y = centre
    box = FancyBboxPatch(
        (x - width / 2, y - BOX_H / 2),
        width,
        BOX_H,
        boxstyle="round,pad=0,rounding_size=0.08",
        facecolor=KINDS[block.kind][0],
        edgecolor="#404040",
        linewidth=0.8,
    )
    ax.add_patch(box)
    lines = [f"{block.name}  {block.filters} ch", block.detail]
    if block.role != "head":
        lines.append(plan.side(block.level))
    ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=7, linespacing=1.25)


def _anchor(centre: tuple[float, float], width: float, side: str) -> tuple[float, float]:
    """The middle of one edge ('left', 'right', 'top', 'bottom') of a box centred at `centre`."""
    x, y = centre
    offsets = {"left": (-width / 2, 0), "right": (width / 2, 0), "top": (0, BOX_H / 2), "bottom": (0, -BOX_H / 2)}
    dx, dy = offsets[side]
    return x + dx, y + dy


def _draw_link(ax: Any, plan: Layout, link: Link, where: dict[str, tuple[float, float]]) -> None:
    """One arrow; skips are dashed, gated skips carry an 'AG' marker next to the decoder end."""
    source, target = plan.block(link.source), plan.block(link.target)
    width = {name: HEAD_W if plan.block(name).role == "head" else BOX_W for name in (link.source, link.target)}
    sides = {"down": ("bottom", "top"), "up": ("top", "bottom"), "skip": ("right", "left"), "head": ("right", "left")}
    start = _anchor(where[source.name], width[source.name], sides[link.kind][0])
    end = _anchor(where[target.name], width[target.name], sides[link.kind][1])
    dashed = link.kind == "skip"
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "color": "#707070" if dashed else "#303030",
            "lw": 1.0,
            "linestyle": "--" if dashed else "-",
            "shrinkA": 1,
            "shrinkB": 1,
        },
    )
    if link.label:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(
            *middle,
            link.label,
            fontsize=7,
            ha="center",
            va="center",
            color="#303030",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
        )
    if link.gated:
        ax.text(
            end[0] - 0.4,
            end[1],
            "AG",
            fontsize=6.5,
            ha="center",
            va="center",
            color="white",
            weight="bold",
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": GATE_COLOUR, "edgecolor": "none"},
        )


def _legend_handles(plan: Layout) -> list[Any]:
    """Legend entries for the block kinds and marks this diagram uses."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = dict.fromkeys(block.kind for block in plan.blocks)
    handles = [Patch(facecolor=KINDS[kind][0], edgecolor="#404040", label=KINDS[kind][1]) for kind in kinds]
    handles.append(Line2D([], [], color="#303030", label="2x max-pool (down), 2x upsampling (up)"))
    handles.append(Line2D([], [], color="#707070", linestyle="--", label="skip connection"))
    if plan.gates:
        handles.append(Line2D([], [], color=GATE_COLOUR, marker="o", linestyle="", label="AG: attention gate"))
    return handles


def _frame(ax: Any, where: dict[str, tuple[float, float]]) -> None:
    """Axis limits fitting the blocks, never narrower than a depth-4 U-Net's, so shallow models keep the box size."""
    rows = max(-y for _, y in where.values())
    right = max(x for x, _ in where.values()) + HEAD_W / 2 + 0.1
    width = max(right, _x("head", 0, MIN_ROWS) + HEAD_W / 2 + 0.1)
    left = (right - width) / 2
    ax.set_xlim(left, left + width)
    ax.set_ylim(-rows - 0.45, 0.45)


def draw(plan: Layout, path: str | Path, dpi: int = 100) -> Path:
    """Render `plan` as a PNG 900 pixels wide at `dpi` 100 (500 high at depth 4, taller or shorter with the depth).

    Returns the path written.
    """
    from matplotlib.figure import Figure

    where = _positions(plan)
    rows = max(-y for _, y in where.values())
    plot_in = (rows + 0.9) * ROW_IN
    height = TOP_IN + plot_in + BOTTOM_IN
    fig = Figure(figsize=(9, height))
    ax = fig.add_axes((0.01, BOTTOM_IN / height, 0.98, plot_in / height))
    ax.set_axis_off()
    _frame(ax, where)
    for link in plan.links:
        _draw_link(ax, plan, link, where)
    for block in plan.blocks:
        _draw_block(ax, plan, block, where[block.name])
    fig.suptitle(f"{plan.arch}: {plan.description}", fontsize=11, y=1 - 0.125 / height)
    settings = f"{plan.settings}; ch = output channels"
    fig.text(0.5, 1 - 0.425 / height, settings, ha="center", fontsize=8, color="#404040")
    fig.legend(handles=_legend_handles(plan), loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    return _save_small_png(fig, Path(path), dpi)


def _save_small_png(fig: Any, path: Path, dpi: int) -> Path:
    """Write `fig` as a palette PNG (a few dozen colours suffice for flat boxes and text: a quarter of the bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, facecolor="white", format="png")
    image = Image.open(buffer).convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path


def draw_architectures(
    folder: str | Path,
    archs: Sequence[str] | None = None,
    shapes: Sequence[Sequence[int]] = (DEFAULT_2D,),
    n_classes: int = 2,
    **overrides: Any,
) -> list[Path]:
    """Write `folder/arch_<code>_<n>d.png` for every arch (default: all codes) and input shape; returns the paths."""
    paths = []
    for arch in archs or list(ARCHS):
        for shape in shapes:
            # fcn has VGG16's fixed depth: a --depth meant for the U-Nets does not apply to it
            own = {k: v for k, v in overrides.items() if not (k == "depth" and arch.lower() == "fcn")}
            plan = layout(arch, shape, n_classes, **own)
            paths.append(draw(plan, Path(folder) / f"arch_{plan.arch}_{plan.rank}d.png"))
    return paths
