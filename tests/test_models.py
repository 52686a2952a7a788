"""Model factory: every arch in 2D and 3D builds with pinned parameters, shapes, softmax, attention, errors."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from spine_keras.errors import UserError
from spine_keras.models import (
    ARCHS,
    LinearUpsample,
    attention_maps,
    attention_model,
    build_model,
    inference_model,
    preset,
    receptive_field,
)

CLASSES = 3
SHAPES = {2: (64, 64, 1), 3: (32, 32, 32, 1)}
# Small builds keep the tests fast: 2D filters=8 at default depth; 3D filters=4, depth=3 (fcn: its fixed 5).
PINNED_PARAMS = {
    2: {
        "u1": 487_899,
        "ud": 488_244,
        "umd": 125_924,
        "uvd": 610_487,
        "uamd": 142_368,
        "uvad": 635_188,
        "uad": 504_688,
        "fcn": 326_426,
    },
    3: {
        "u1": 88_311,
        "ud": 88_389,
        "umd": 23_485,
        "uvd": 95_557,
        "uamd": 25_196,
        "uvad": 97_268,
        "uad": 90_100,
        "fcn": 271_806,
    },
}
DEFAULT_DEPTH = {"u1": 4, "ud": 4, "umd": 4, "uvd": 5, "uamd": 4, "uvad": 5, "uad": 4, "fcn": 5}
CASES = [(arch, rank) for rank in (2, 3) for arch in ARCHS]


def small_overrides(arch: str, rank: int) -> dict:
    """The overrides of the pinned builds."""
    if rank == 2:
        return {"filters": 8}
    return {"filters": 4} if arch == "fcn" else {"filters": 4, "depth": 3}


@functools.cache
def small_model(arch: str, rank: int) -> keras.Model:
    """The pinned build of `arch` in 2D or 3D (cached: read-only use)."""
    keras.utils.set_random_seed(0)
    return build_model(arch, SHAPES[rank], CLASSES, **small_overrides(arch, rank))


def batch(rank: int, n: int = 1) -> np.ndarray:
    """A fixed random input batch."""
    return np.random.default_rng(1).random((n, *SHAPES[rank]), dtype=np.float32)


@pytest.mark.parametrize("arch,rank", CASES)
def test_pinned_parameters_outputs_and_shapes(arch, rank):
    model = small_model(arch, rank)
    assert model.count_params() == PINNED_PARAMS[rank][arch]
    depth = 3 if rank == 3 and arch != "fcn" else DEFAULT_DEPTH[arch]
    n_aux = depth - 1 if ARCHS[arch].deep_supervision else 0
    assert model.output_names == ["seg"] + [f"aux_{k}" for k in range(1, n_aux + 1)]
    for out in model.outputs:
        assert tuple(out.shape) == (None, *SHAPES[rank][:-1], CLASSES)
        assert out.dtype == "float32"


def test_hand_counted_parameters():
    # enc 72+32+576+32, bottleneck 1152+64+2304+64, transposed conv 2*2*16*8+8, dec 1152+32+576+32, head 8*3+3
    assert build_model("u1", (16, 16, 1), 3, filters=8, depth=1).count_params() == 6635


@pytest.mark.parametrize("arch,rank", CASES)
def test_softmax_outputs_sum_to_one(arch, rank):
    outputs = small_model(arch, rank)(batch(rank), training=False)
    for out in outputs if isinstance(outputs, list) else [outputs]:
        out = keras.ops.convert_to_numpy(out)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
        assert out.min() >= 0.0


@pytest.mark.parametrize("arch,rank", [(a, r) for a, r in CASES if ARCHS[a].attention])
def test_attention_coefficients_lie_in_unit_interval(arch, rank):
    model = small_model(arch, rank)
    maps = attention_maps(model, batch(rank))
    depth = 3 if rank == 3 else DEFAULT_DEPTH[arch]
    assert len(maps) == depth == len(attention_model(model).outputs)
    for level, coeffs in enumerate(maps):
        side = np.array(SHAPES[rank][:-1]) // 2**level
        assert coeffs.shape == (1, *side, 1)
        assert 0.0 <= coeffs.min() < coeffs.max() <= 1.0


def test_attention_model_needs_attention_gates():
    with pytest.raises(UserError, match="no attention gates"):
        attention_model(small_model("u1", 2))


def test_inference_model_keeps_main_output_and_weights():
    model = small_model("uamd", 2)
    single = inference_model(model)
    assert single.output_names == ["seg"]
    assert (
        single.count_params()
        == build_model("uamd", SHAPES[2], CLASSES, filters=8, deep_supervision=False).count_params()
    )
    assert {id(w) for w in single.weights} <= {id(w) for w in model.weights}
    np.testing.assert_array_equal(single(batch(2), training=False), model(batch(2), training=False)[0])
    assert inference_model(small_model("u1", 2)) is small_model("u1", 2)


@pytest.mark.parametrize(
    "override,value,layer_type",
    [
        ("activation", "prelu", keras.layers.PReLU),
        ("activation", "leaky_relu", keras.layers.LeakyReLU),
        ("normalization", "group", keras.layers.GroupNormalization),
        ("normalization", "instance", keras.layers.GroupNormalization),
        ("upsampling", "resize", LinearUpsample),
    ],
)
@pytest.mark.parametrize("rank", [2, 3])
def test_overrides_change_the_layers(override, value, layer_type, rank):
    shape = (16,) * rank + (1,)
    model = build_model("uad", shape, CLASSES, filters=8, depth=2, **{override: value})
    assert any(isinstance(layer, layer_type) for layer in model.layers)
    out = keras.ops.convert_to_numpy(model(np.ones((1, *shape), np.float32), training=False)[0])
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_group_and_instance_normalization_groups():
    group = build_model("u1", (16, 16, 1), 2, filters=12, depth=1, normalization="group")
    instance = build_model("u1", (16, 16, 1), 2, filters=12, depth=1, normalization="instance")
    assert group.get_layer("enc1_1_norm").groups == 4
    assert instance.get_layer("enc1_1_norm").groups == 12


def test_no_normalization_gives_biased_convolutions_and_dropout_layers():
    model = build_model("u1", (16, 16, 1), 2, filters=8, depth=1, normalization="none", dropout=0.25)
    assert model.get_layer("enc1_1_conv").use_bias
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("enc1_drop").rate == 0.25


def test_logits_when_final_activation_is_none():
    model = build_model("ud", (16, 16, 1), 2, filters=4, depth=2, final_activation=None)
    outs = [keras.ops.convert_to_numpy(o) for o in model(batch(2)[:, :16, :16], training=False)]
    assert len(outs) == 2 and all(o.dtype == np.float32 for o in outs)
    assert not np.allclose(outs[0].sum(axis=-1), 1.0)


def test_deep_supervision_switch():
    assert len(build_model("uamd", (32, 32, 1), 2, filters=4, deep_supervision=False).outputs) == 1
    assert build_model("u1", (32, 32, 1), 2, filters=4, depth=3, deep_supervision=True).output_names == [
        "seg",
        "aux_1",
        "aux_2",
    ]


def test_mixed_precision_keeps_float32_outputs():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = build_model("uamd", (16, 16, 1), 2, filters=4, depth=2)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.get_layer("enc1_b1_conv").compute_dtype == "float16"
    assert all(out.dtype == "float32" for out in model.outputs)


def test_presets_are_fresh_data_and_build_defaults():
    assert preset("UAD") == {"optimizer": "rmsprop", "lr": 0.001, "activation": "relu", "filters": 16}
    assert preset("u1") == {"optimizer": "adadelta", "lr": 1.0, "activation": "relu", "filters": 64}
    assert [preset(a)["filters"] for a in ARCHS] == [64, 64, 32, 32, 16, 32, 16, 32]
    preset("uvd")["filters"] = 1
    assert preset("uvd")["filters"] == 32
    model = build_model("uvd", (32, 32, 1), 2)
    assert model.get_layer("enc1_1_conv").filters == 32
    assert isinstance(model.get_layer("enc1_1_act"), keras.layers.PReLU)


def test_vgg_encoder_has_13_convolutions_scaled_from_the_filters():
    model = build_model("uvd", (32, 32, 1), 2, filters=4)
    enc = [layer for layer in model.layers if layer.name.startswith("enc") and layer.name.endswith("_conv")]
    assert [layer.filters for layer in enc] == [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]


def test_receptive_field_by_hand():
    # conv3 conv3 (5) pool (6, stride 2) conv3 conv3 (14) up (stride 1) conv3 conv3 (18)
    assert receptive_field(build_model("u1", (16, 16, 1), 2, filters=4, depth=1)) == 18


def _linear_reference(x: np.ndarray, factor: int) -> np.ndarray:
    """Half-pixel linear upsampling along every spatial axis of a channels-last batch, in numpy."""
    for axis in range(1, x.ndim - 1):
        n = x.shape[axis]
        coords = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
        low = np.floor(coords).astype(int)
        weight = (coords - low).reshape([-1 if i == axis else 1 for i in range(x.ndim)])
        x = np.take(x, low, axis) * (1 - weight) + np.take(x, np.minimum(low + 1, n - 1), axis) * weight
    return x


@pytest.mark.parametrize("shape", [(2, 3, 5, 2), (1, 3, 4, 5, 2)])
def test_linear_upsample_matches_reference(shape):
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    layer = LinearUpsample(2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), _linear_reference(x, 2), atol=1e-5)
    assert LinearUpsample.from_config(layer.get_config()).factor == 2


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (
            ("unet", (64, 64, 1), 2),
            {},
            "unknown architecture 'unet'; valid codes: u1, ud, umd, uvd, uamd, uvad, uad, fcn",
        ),
        (("u1", (64, 60, 1), 2), {}, r"input side W=60 is not divisible by 2\^4=16 .*nearest valid size: 64"),
        (("u1", (20, 64, 64, 1), 2), {}, r"input side D=20 .* nearest valid size: 16"),
        (("uvd", (48, 48, 1), 2), {}, r"H=48 is not divisible by 2\^5=32 \(the VGG16 encoder of uvd pools 5 times\)"),
        (("fcn", (64, 80, 1), 2), {}, r"W=80 is not divisible by 2\^5=32 .*nearest valid size: 64"),
        (("u1", (64, 64), 2), {}, r"needs \(H, W, C\) for 2D or \(D, H, W, C\) for 3D"),
        (("u1", (64, 64, 1), 1), {}, "n_classes must be an integer >= 2"),
        (("u1", (64, 64, 1), 2), {"filter": 8}, "unknown override.*filter; valid: filters, depth, activation"),
        (("u1", (64, 64, 1), 2), {"activation": "gelu"}, "activation='gelu' is not valid; choose one of: relu, prelu"),
        (("u1", (64, 64, 1), 2), {"normalization": "layer"}, "batch, group, instance, none"),
        (("u1", (64, 64, 1), 2), {"upsampling": "nearest"}, "transpose, resize"),
        (("u1", (64, 64, 1), 2), {"final_activation": "sigmoid"}, "softmax, none"),
        (("u1", (64, 64, 1), 2), {"dropout": 1.0}, r"dropout must be a rate in \[0, 1\)"),
        (("u1", (64, 64, 1), 2), {"depth": 0}, "depth must be an integer"),
        (("u1", (64, 64, 1), 2), {"deep_supervision": "yes"}, "deep_supervision must be True or False"),
        (("uvd", (64, 64, 1), 2), {"depth": 6}, r"depth must be an integer in 1\.\.5"),
        (("umd", (64, 64, 1), 2), {"filters": 2}, "filters must be an integer >= 4"),
        (("fcn", (64, 64, 1), 2), {"depth": 4}, "fcn has the fixed depth 5"),
        (("fcn", (64, 64, 1), 2), {"deep_supervision": True}, "fcn has no decoder levels"),
    ],
)
def test_user_errors(args, kwargs, message):
    with pytest.raises(UserError, match=message):
        build_model(*args, **kwargs)
