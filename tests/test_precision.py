"""Mixed precision: `auto` (the recipe's) turns it on only where the hardware computes the half type natively, a
value other than true, false or auto is refused, and a model trained under it predicts and exports in float32 with
its own weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spine_keras.cli.train import parser as train_parser
from spine_keras.errors import UserError
from spine_keras.models import build_model, inference_model
from spine_keras.train import strategy
from spine_keras.train.settings import TrainSettings
from spine_keras.train.strategy import cpu_computes_bfloat16, dtype_policy, precision_policy

NO_GPU = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="the CPU rule only")


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse2 avx2 amx_bf16 amx_tile", True),
        ("fpu sse2 avx2 avx512f avx512_vnni", False),
        ("fpu sse2 avx512_bf16x", False),  # only a flag of exactly that name counts
    ],
)
def test_cpu_bfloat16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: avx512_bf16 in a name\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_computes_bfloat16(info) is native


def test_no_cpuinfo_means_no_native_bfloat16(tmp_path):
    assert cpu_computes_bfloat16(tmp_path / "missing") is False


@NO_GPU
@pytest.mark.parametrize(("native", "auto"), [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_follows_the_cpu_and_true_or_false_do_not(monkeypatch, native, auto):
    monkeypatch.setattr(strategy, "cpu_computes_bfloat16", lambda: native)
    assert precision_policy("auto") == auto
    assert (precision_policy(True), precision_policy(False)) == ("mixed_bfloat16", "float32")


def test_the_recipe_asks_auto_the_paper_float32_and_a_flag_wins():
    assert TrainSettings().mixed_precision == "auto"
    assert TrainSettings(preset="paper").mixed_precision is False
    assert TrainSettings(preset="paper", mixed_precision="auto").mixed_precision == "auto"
    assert train_parser().parse_args(["--no-mixed-precision"]).mixed_precision is False
    with pytest.raises(UserError, match=r"mixed_precision must be one of true, false, auto, got 'maybe'"):
        TrainSettings(mixed_precision="maybe")


@pytest.mark.parametrize("arch", ["u1", "uamd"])  # uamd: deep supervision, reduced to its seg output
def test_a_mixed_precision_model_predicts_in_float32_with_its_own_weights(arch):
    with dtype_policy("mixed_bfloat16"):
        mixed = build_model(arch, (64, 64, 1), 3, filters=4)
    plain = build_model(arch, (64, 64, 1), 3, filters=4)
    plain.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
    served = inference_model(mixed)
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}
    expected = keras.ops.convert_to_numpy(inference_model(plain)(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(served(x, training=False)), expected, atol=1e-6)
    rounded = mixed(x, training=False)
    rounded = keras.ops.convert_to_numpy(rounded[0] if isinstance(rounded, (list, tuple)) else rounded)
    assert 0 < np.abs(rounded.astype(np.float32) - expected).max() < 0.1  # bfloat16 rounds; float32 does not


@pytest.mark.parametrize(
    ("capabilities", "native"), [([(8, 0)], True), ([(8, 0), (7, 0)], True), ([(8, 0), (6, 1)], False)]
)
def test_gpus_count_as_native_float16_from_compute_capability_7(monkeypatch, capabilities, native):
    details = dict(enumerate(capabilities))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": details[gpu]})
    assert strategy._gpus_compute_float16(list(details)) is native
