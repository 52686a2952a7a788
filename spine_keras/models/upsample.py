"""Linear upsampling for 2D and 3D tensors (Keras' UpSampling3D can only repeat voxels)."""

from __future__ import annotations

import keras
from keras import ops


def _resize(x, size: tuple[int, int]):
    """Bilinear resize of a channels-last batch of images to `size`."""
    return ops.image.resize(x, size, interpolation="bilinear", data_format="channels_last")


@keras.saving.register_keras_serializable(package="spine_keras")
class LinearUpsample(keras.layers.Layer):
    """Bilinear (2D) or trilinear (3D) upsampling by an integer factor on every spatial axis."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        f = self.factor
        if f == 1:
            return x
        *spatial, channels = x.shape[1:]
        if len(spatial) == 2:
            y = _resize(x, (spatial[0] * f, spatial[1] * f))
        else:
            d, h, w = spatial
            y = _resize(ops.reshape(x, (-1, h, w, channels)), (h * f, w * f))
            y = _resize(ops.reshape(y, (-1, d, h * f * w * f, channels)), (d * f, h * f * w * f))
            y = ops.reshape(y, (-1, d * f, h * f, w * f, channels))
        return ops.cast(y, x.dtype)

    def compute_output_shape(self, input_shape):
        spatial = tuple(None if s is None else s * self.factor for s in input_shape[1:-1])
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}
