"""MRI augmentations (gamma, contrast, bias field, low resolution, elastic): identity at zero strength, hand-checked
values, determinism from the parameters, label ids kept, older draws untouched, settings from old cubes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from spine_keras.augment import AugmentConfig, AugmentParams, apply, augment, elastic, mri, sample_params
from spine_keras.augment.params import bias_terms
from spine_keras.cli.flags import dataclass_from_flags
from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cli.make_cube import parser as make_cube_parser
from spine_keras.cube import read_attrs

OFF = dict(rotation=0.0, zoom=(1.0, 1.0), flip_prob=0.0, shift=0.0, noise_prob=0.0, blur_prob=0.0, intensity_prob=0.0)
ZERO_STRENGTH = dict(
    gamma=(1.0, 1.0),
    contrast=(1.0, 1.0),
    bias_strength=0.0,
    lowres_factor=(1.0, 1.0),
    elastic_alpha=(0.0, 0.0),
    **{f"{name}_prob": 1.0 for name in ("gamma", "contrast", "bias", "lowres", "elastic")},
)
ALL_ON = {f"{name}_prob": 1.0 for name in ("gamma", "contrast", "bias", "lowres", "elastic")}
OLD_KEYS = (
    *("rotation", "zoom", "flip_prob", "flip_axes", "shift", "noise_std", "noise_prob", "blur_sigma", "blur_prob"),
    *("intensity_scale", "intensity_shift", "intensity_prob", "fill_value"),
)
IDS = (0, 3, 255)  # 255: the ignore label must survive nearest-neighbour resampling like any id


def params(ndim: int, **changes) -> AugmentParams:
    """Identity parameters with some fields changed."""
    return AugmentParams.from_dict({**AugmentParams.identity(ndim).to_dict(), **changes})


def pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth positive-and-negative float32 image and a blocky uint8 label with ids 0, 3 and 255."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    image = (np.sin(grid.sum(0) / 3) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    coarse = rng.choice(np.array(IDS, np.uint8), size=tuple(-(-n // 4) for n in shape))
    label = np.kron(coarse, np.ones((4,) * len(shape), np.uint8))[tuple(slice(0, n) for n in shape)]
    return image, np.ascontiguousarray(label)


def each_transform(ndim: int) -> dict[str, dict]:
    """One non-trivial parameter setting per MRI transform."""
    terms = len(bias_terms(2, ndim))
    return {
        "gamma": dict(gamma=1.4),
        "contrast": dict(contrast=0.8),
        "bias": dict(bias_order=2, bias_coefficients=np.linspace(-0.3, 0.3, terms).tolist()),
        "lowres": dict(lowres=[2.0] * ndim),
        "elastic": dict(elastic_alpha=1.5, elastic_sigma=4.0, elastic_seed=5),
    }


@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 8)])
def test_every_mri_transform_at_zero_strength_gives_the_input_back(shape):
    image, label = pair(shape)
    config = AugmentConfig(**{**OFF, **ZERO_STRENGTH})
    for seed in range(3):
        out, out_label = augment(image, label, config, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(out_label, label)


@pytest.mark.parametrize("shape", [(24, 20, 1), (12, 10, 8, 1)])
@pytest.mark.parametrize("name", ["gamma", "contrast", "bias", "lowres", "elastic"])
def test_each_transform_is_deterministic_keeps_shape_dtype_and_label_ids(shape, name):
    image, label = pair(shape[:-1])
    image = image[..., None]
    p = params(len(shape) - 1, **each_transform(len(shape) - 1)[name])
    out, out_label = apply(image, label, p)
    again = apply(image, label, AugmentParams.from_dict(json.loads(json.dumps(p.to_dict()))))
    np.testing.assert_array_equal(again[0], out)
    np.testing.assert_array_equal(again[1], out_label)
    assert out.shape == image.shape and out.dtype == np.float32 and out_label.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert set(np.unique(out_label)) <= set(IDS)
    if name != "elastic":  # intensity transforms leave the label alone
        np.testing.assert_array_equal(out_label, label)


def test_gamma_2_on_a_ramp_is_the_ramp_squared_and_keeps_the_range():
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    np.testing.assert_allclose(apply(ramp, None, params(2, gamma=2.0))[0], ramp**2, atol=1e-6)
    shifted = 2 + 4 * ramp  # min 2, max 6: rescaled to [0, 1], squared, rescaled back
    out = mri.gamma(shifted, 2.0)
    np.testing.assert_allclose(out, 2 + 4 * ramp**2, atol=1e-5)
    assert out.min() == pytest.approx(2) and out.max() == pytest.approx(6)
    np.testing.assert_array_equal(mri.gamma(np.full((4, 4), 3.0, np.float32), 2.0), 3.0)


def test_contrast_keeps_the_mean_and_scales_the_spread():
    image, _ = pair((32, 32, 8))
    out = apply(image, None, params(3, contrast=1.5))[0]
    assert out.mean() == pytest.approx(image.mean(), abs=1e-5)
    assert out.std() == pytest.approx(1.5 * image.std(), rel=1e-5)


def test_bias_field_is_the_polynomial_positive_and_smooth():
    rng = np.random.default_rng(0)
    coefficients = rng.uniform(-0.5, 0.5, 6)
    field = mri.bias_field((32, 48), 2, tuple(coefficients))
    y, x = np.linspace(-1, 1, 32)[:, None], np.linspace(-1, 1, 48)[None, :]
    terms = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]  # exponents of (axis 0, axis 1), constant first
    assert bias_terms(2, 2) == terms
    expected = np.exp(sum(c * y**i * x**j for c, (i, j) in zip(coefficients, terms)))
    np.testing.assert_allclose(field, expected, rtol=1e-6)
    field3 = mri.bias_field((16, 40, 40), 3, tuple(rng.uniform(-0.5, 0.5, 20)))
    assert field3.dtype == np.float32 and field3.min() > 0
    for axis, n in enumerate(field3.shape):  # |d log f / dx| <= sum |c| * degree, over a step of 2 / (n - 1)
        bound = 0.5 * sum(e[axis] for e in bias_terms(3, 3)) * 2 / (n - 1)
        assert np.abs(np.diff(np.log(field3), axis=axis)).max() <= bound


def test_bias_field_multiplies_the_signal_above_the_floor():
    image, label = pair((20, 24))
    coefficients = tuple(np.linspace(-0.4, 0.4, 6))
    out, out_label = apply(image, label, params(2, bias_order=2, bias_coefficients=coefficients))
    floor = image.min()
    np.testing.assert_allclose(out - floor, (image - floor) * mri.bias_field(image.shape, 2, coefficients), atol=1e-5)
    assert out.min() == pytest.approx(floor)
    np.testing.assert_array_equal(out_label, label)


def test_low_resolution_factor_1_is_identity_and_2_blurs_a_step_along_its_axis_only():
    step = np.zeros((32, 32), np.float32)
    step[:, 15:] = 1.0  # an edge at an odd position: halving the width cannot keep it
    np.testing.assert_array_equal(apply(step, None, params(2, lowres=[1.0, 1.0]))[0], step)
    np.testing.assert_array_equal(mri.low_resolution(step, (1.0, 1.0)), step)
    out = apply(step, None, params(2, lowres=[1.0, 2.0]))[0]
    assert not np.array_equal(out, step)
    assert out.min() >= 0 and out.max() <= 1  # linear interpolation: no overshoot
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))  # axis 0 untouched
    np.testing.assert_array_equal(out[:, :13], 0)  # far from the edge nothing changes
    np.testing.assert_array_equal(out[:, 18:], 1)
    np.testing.assert_array_equal(apply(step.T.copy(), None, params(2, lowres=[1.0, 2.0]))[0], step.T)


def test_elastic_moves_every_voxel_by_the_seeded_field():
    ramp = np.indices((64, 64), dtype=np.float32)[0]  # a linear image: linear interpolation reads coordinates
    out = apply(ramp, None, params(2, elastic_alpha=2.0, elastic_sigma=8.0, elastic_seed=3))[0]
    field = elastic.displacement((64, 64), 2.0, 8.0, 3)
    assert field.shape == (2, 64, 64) and field.dtype == np.float32
    np.testing.assert_allclose(field.std(axis=(1, 2)), [2.0, 2.0], rtol=1e-4)  # alpha: displacement sd, voxels
    inner = (slice(10, -10), slice(10, -10))
    np.testing.assert_allclose(out[inner], (ramp + field[0])[inner], atol=1e-4)
    assert np.abs(out - ramp)[inner].max() > 2.0  # points really move by about alpha
    assert np.abs(np.diff(field, axis=1)).max() < 1.0  # smooth: neighbours move alike (no folding)
    np.testing.assert_array_equal(elastic.displacement((64, 64), 2.0, 8.0, 3), field)
    assert not np.array_equal(elastic.displacement((64, 64), 2.0, 8.0, 4), field)
    np.testing.assert_array_equal(apply(ramp, None, params(2, elastic_sigma=8.0, elastic_seed=3))[0], ramp)


def test_elastic_composes_with_the_affine_in_one_pass():
    image, label = pair((33, 33))
    deform = dict(elastic_alpha=2.0, elastic_sigma=6.0, elastic_seed=9)
    both = apply(image, label, params(2, rotation=[90.0], **deform))
    after = apply(np.rot90(image).copy(), np.rot90(label).copy(), params(2, **deform))
    np.testing.assert_allclose(both[0], after[0], atol=1e-5)
    np.testing.assert_array_equal(both[1], after[1])


def test_labels_keep_their_ids_through_everything_in_3d():
    image, label = pair((16, 24, 24))
    config = AugmentConfig(**ALL_ON, elastic_alpha=(2.0, 3.0), elastic_sigma=(4.0, 6.0), rotation=30)
    rng = np.random.default_rng(1)
    for _ in range(3):
        out, out_label = augment(image, label, config, rng)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert out_label.dtype == np.uint8 and set(np.unique(out_label)) <= set(IDS)
        assert 255 in out_label


def test_older_transforms_draw_the_same_whatever_the_mri_settings():
    base = AugmentConfig(noise_prob=1.0, blur_prob=1.0, intensity_prob=1.0)
    with_mri = dataclasses.replace(base, **ALL_ON)
    plain_rng, mri_rng = np.random.default_rng(7), np.random.default_rng(7)
    old_fields = ("rotation", "zoom", "flip", "shift", "noise_std", "noise_seed", "blur_sigma", "intensity_scale")
    for _ in range(5):
        plain, drawn = sample_params(base, (16, 16, 16), plain_rng), sample_params(with_mri, (16, 16, 16), mri_rng)
        assert {f: getattr(plain, f) for f in old_fields} == {f: getattr(drawn, f) for f in old_fields}
        assert plain.gamma == 1.0 and drawn.gamma != 1.0 and drawn.elastic_seed != 0
    replay, rng = np.random.default_rng(7), np.random.default_rng(7)
    replay.random(16)  # the draws of a 3D sample before the MRI transforms existed: 3 + 1 + 1 + 3 + 2 + 1 + 2 + 3
    sample_params(with_mri, (16, 16, 16), rng)
    assert rng.bit_generator.state == replay.bit_generator.state  # so the same seed still gives the same cube


def test_mri_draws_stay_in_their_ranges():
    config = AugmentConfig(**ALL_ON, bias_order=2, lowres_axes=(0, 2), lowres_one_axis=True)
    rng = np.random.default_rng(0)
    draws = [sample_params(config, (8, 8, 8), rng) for _ in range(200)]
    gammas = np.array([p.gamma for p in draws])
    assert gammas.min() >= 0.7 and gammas.max() <= 1.5 and 0.35 < (gammas < 1).mean() < 0.65  # nnU-Net's split
    assert all(0.75 <= p.contrast <= 1.25 for p in draws)
    assert all(len(p.bias_coefficients) == 10 and max(map(abs, p.bias_coefficients)) <= 0.5 for p in draws)
    lowered = [tuple(a for a, f in enumerate(p.lowres) if f > 1) for p in draws]
    assert set(lowered) == {(0,), (2,)}  # one axis of lowres_axes each time (factor 1 exactly has probability 0)
    assert all(1 <= max(p.lowres) <= 2 for p in draws)
    assert all(0 <= p.elastic_alpha <= 2 and 10 <= p.elastic_sigma <= 15 for p in draws)
    assert len({p.elastic_seed for p in draws}) == 200
    all_axes = sample_params(dataclasses.replace(config, lowres_one_axis=False), (8, 8, 8), rng)
    assert all_axes.lowres[1] == 1.0 and all_axes.lowres[0] == all_axes.lowres[2] > 1


def test_settings_from_old_cubes_get_the_defaults_and_new_ones_validate():
    old = {k: v for k, v in AugmentConfig().to_dict().items() if k in OLD_KEYS}
    assert AugmentConfig.from_dict(old) == AugmentConfig()
    assert AugmentParams.from_dict(AugmentParams.identity(3).to_dict() | {"gamma": 1.0}) == AugmentParams.identity(3)
    config = AugmentConfig(gamma=[0.8, 1.2], lowres_axes=[1], bias_order=2.0, elastic_alpha=[1, 2])
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.bias_order == 2 and config.lowres_axes == (1,)
    for bad, field in [
        ({"gamma": (0, 1)}, "gamma"),
        ({"contrast": (-1, 1)}, "contrast"),
        ({"bias_strength": -1}, "bias_strength"),
        ({"bias_order": 2.5}, "bias_order"),
        ({"lowres_factor": (0.5, 2)}, "lowres_factor"),
        ({"lowres_axes": (0.5,)}, "lowres_axes"),
        ({"lowres_one_axis": "yes"}, "lowres_one_axis"),
        ({"elastic_sigma": (0, 1)}, "elastic_sigma"),
        ({"elastic_prob": 2}, "elastic_prob"),
    ]:
        with pytest.raises(ValueError, match=field):
            AugmentConfig(**bad)
    with pytest.raises(ValueError, match="lowres_axes"):
        sample_params(AugmentConfig(lowres_axes=(2,)), (8, 8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="bias_coefficients"):
        params(2, bias_order=2, bias_coefficients=[0.1] * 5)


def test_make_cube_flags_set_the_mri_settings_and_the_cube_records_them(pair_list, tmp_path: Path):
    flags = ["--gamma-prob", "1", "--bias-order", "1", "--bias-prob", "1", "--lowres-axes", "0"]
    flags += ["--lowres-one-axis", "true", "--lowres-prob", "1", "--elastic-prob", "1", "--elastic-alpha", "1,2"]
    args = make_cube_parser().parse_args(["list.txt", *flags])
    config = dataclass_from_flags(AugmentConfig, args)
    assert config == AugmentConfig(
        gamma_prob=1, bias_order=1, bias_prob=1, lowres_axes=(0,), lowres_one_axis=True, lowres_prob=1,
        elastic_prob=1, elastic_alpha=(1, 2),
    )  # fmt: skip
    cube = tmp_path / "c.h5"
    shape = ["--shape", "32,32", "--augment", "1", "--label-map", "1:1,2:2", "--preset", "paper"]  # the defaults
    assert make_cube([str(pair_list(1)), "-o", str(cube), "--quiet", "--workers", "1", *shape, *flags]) == 0
    recorded = read_attrs(cube)["augment"]
    assert recorded.pop("copies") == 1 and AugmentConfig.from_dict(recorded) == config
    with h5py.File(cube) as f:
        augmented, labels = f["augmented"][:], f["labels"][:]
    assert set(np.unique(labels[augmented == 1])) <= {0, 1, 2}
