"""The named choices the commands offer, as plain data.

Kept apart from the modules that act on them (models, losses, training, prediction) because those import Keras:
a command builds its parser, and answers `--help` or a wrong flag, from this module alone, without TensorFlow.
"""

ACTIVATIONS = ("relu", "prelu", "leaky_relu")
NORMALIZATIONS = ("batch", "group", "instance", "none")  # of the model's layers, not of intensities
UPSAMPLINGS = ("transpose", "resize")
LOSSES = ("dice", "ce", "ce+dice")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "adadelta", "adagrad", "nadam")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
LR_SCHEDULES = ("plateau", "constant", "cosine", "poly")  # plateau: reduce on a validation plateau, as before
KEEPS = ("best", "last")  # which epoch a run keeps as its model: the best on validation, or the last
INTENSITY_NORMALIZATIONS = ("zscore", "percentile", "minmax")  # per volume, in preprocessing
INTERPOLATIONS = {"linear": 1, "cubic": 3}  # image resampling: name -> spline order
FITS = ("resize", "pad")  # how samples are brought to the cube's shape
FORMATS = {"nrrd": ".nrrd", "nii": ".nii", "nii.gz": ".nii.gz", "mha": ".mha"}  # prediction outputs: name -> suffix
TTA_MODES = ("train", "all")  # flips averaged at prediction: those seen in training, or every one
