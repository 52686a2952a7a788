"""spine_keras: segmentation of spine MRI with Keras 3 (ICPR 2020 U-Net variants, 2D and 3D)."""

__version__ = "0.1.0"
