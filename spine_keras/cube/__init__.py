"""The training cube: list -> cases -> samples -> HDF5 (streaming, parallel, atomic), and its reader."""

from spine_keras.cube.store import CUBE_FORMAT, read_attrs, write_cube_arrays

__all__ = ["CUBE_FORMAT", "read_attrs", "write_cube_arrays"]
