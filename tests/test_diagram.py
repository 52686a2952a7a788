"""Architecture diagrams: the layout matches the built models, marks gates and heads, and renders a small PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import pytest
from PIL import Image

from spine_keras.cli.models import main
from spine_keras.models import ARCHS, attention_layers, build_model
from spine_keras.models.diagram import draw, draw_architectures, layout

ROOT = Path(__file__).resolve().parents[1]


def test_uamd_layout_has_four_gated_levels_inception_blocks_and_three_aux_heads():
    plan = layout("uamd")  # preset filters 16, default depth 4, 256x256x1
    assert plan.levels == 4
    encoders = [plan.block(f"enc{i}") for i in range(1, 5)]
    assert [b.filters for b in encoders] == [16, 32, 64, 128]
    assert [plan.side(b.level) for b in encoders] == ["256x256", "128x128", "64x64", "32x32"]
    assert plan.block("bottleneck").filters == 256 and plan.block("bottleneck").level == 4
    assert {b.kind for b in plan.blocks if b.role != "head"} == {"inception"}
    assert [(g.source, g.target) for g in plan.gates] == [(f"enc{i}", f"dec{i}") for i in range(1, 5)]
    assert [(h.name, h.level, h.detail) for h in plan.heads] == [
        ("seg", 0, "softmax"),
        ("aux_1", 1, "up x2, softmax"),
        ("aux_2", 2, "up x4, softmax"),
        ("aux_3", 3, "up x8, softmax"),
    ]


def test_vgg_encoder_widths_cap_at_eight_times_and_u1_has_no_gates_or_aux_heads():
    uvd = layout("uvd")
    assert [uvd.block(f"enc{i}").filters for i in range(1, 6)] == [32, 64, 128, 256, 256]
    assert [uvd.block(f"enc{i}").kind for i in range(1, 6)] == ["vgg"] * 5
    assert uvd.block("dec1").kind == "conv" and uvd.gates == []
    u1 = layout("u1", (64, 64, 1), depth=2)
    assert u1.levels == 2 and [h.name for h in u1.heads] == ["seg"] and u1.gates == []


def test_fcn_layout_fuses_pool4_then_pool3_and_upsamples_8x():
    plan = layout("fcn", n_classes=3)
    assert plan.levels == 5 and plan.block("fc6-7").filters == 16 * 32
    skips = [(link.source, link.target, link.label) for link in plan.links if link.kind == "skip"]
    assert skips == [("enc4", "fuse_pool4", "pool4"), ("enc3", "fuse_pool3", "pool3")]
    assert [(b.name, b.level, b.filters) for b in plan.blocks if b.role == "decoder"] == [
        ("fuse_pool4", 4, 3),
        ("fuse_pool3", 3, 3),
    ]
    assert [(h.name, h.detail) for h in plan.heads] == [("seg", "up x8, softmax")]


def unet_widths(model: keras.Model, depth: int) -> dict[str, int]:
    """Output channels of each encoder, decoder and the bottleneck, read from the layers that consume them."""
    channels = {f"enc{i}": model.get_layer(f"pool{i}").input.shape[-1] for i in range(1, depth + 1)}
    channels["bottleneck"] = model.get_layer(f"up{depth}").input.shape[-1]
    channels.update({f"dec{i}": model.get_layer(f"up{i - 1}").input.shape[-1] for i in range(2, depth + 1)})
    channels["dec1"] = model.get_layer("seg_logits").input.shape[-1]
    return channels


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "fcn"])
@pytest.mark.parametrize("shape", [(32, 32, 1), (32, 32, 32, 1)])
def test_unet_layouts_match_the_built_models(arch, shape):
    depth = 5 if ARCHS[arch].vgg else 3
    plan = layout(arch, shape, 3, filters=4, depth=depth)
    model = build_model(arch, shape, 3, filters=4, depth=depth)
    found = {b.name: b.filters for b in plan.blocks if b.role != "head"}
    assert found == unet_widths(model, depth)
    assert [h.name for h in plan.heads] == list(model.output_names)
    assert [plan.block(g.target).level + 1 for g in plan.gates] == [
        int(layer.name.split("_")[1]) for layer in attention_layers(model)
    ]
    keras.backend.clear_session()


def test_fcn_layout_matches_the_built_model():
    plan = layout("fcn", (32, 32, 1), 3, filters=4)
    model = build_model("fcn", (32, 32, 1), 3, filters=4)
    for i in range(1, 6):
        assert plan.block(f"enc{i}").filters == model.get_layer(f"pool{i}").input.shape[-1]
    assert plan.block("fc6-7").filters == model.get_layer("fc7_conv").output.shape[-1] == 64
    assert plan.block("fuse_pool4").filters == model.get_layer("fuse_pool4").output.shape[-1] == 3


def test_draw_writes_a_small_png_of_about_900_by_500_pixels(tmp_path):
    path = draw(layout("uamd"), tmp_path / "sub" / "uamd.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(path).size == (900, 500)
    assert path.stat().st_size < 80_000


def test_draw_architectures_writes_every_code_and_skips_depth_for_fcn(tmp_path):
    paths = draw_architectures(tmp_path, ["uad", "fcn"], [(64, 64, 1), (32, 64, 64, 1)], depth=2)
    assert [p.name for p in paths] == ["arch_uad_2d.png", "arch_uad_3d.png", "arch_fcn_2d.png", "arch_fcn_3d.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_cli_diagram_writes_pngs_and_plot_model_without_graphviz_is_a_user_error(tmp_path, monkeypatch, capsys):
    small = ["--archs", "uamd", "--dims", "2", "--shape2d", "32", "32", "1", "--filters", "4", "--depth", "2"]
    assert main([*small, "--diagram", str(tmp_path)]) == 0
    assert (tmp_path / "arch_uamd_2d.png").read_bytes()[:4] == b"\x89PNG"
    assert "| uamd | 2D | 32x32x1 |" in capsys.readouterr().out
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz `dot` here
    assert main([*small, "--plot-model", str(tmp_path)]) == 2
    assert "--plot-model needs pydot" in capsys.readouterr().err


def test_diagram_and_cli_parsing_import_no_keras():
    code = (
        "import sys; from spine_keras.models.diagram import layout; from spine_keras.cli.models import parse_args; "
        "layout('uamd'); parse_args([]); print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
