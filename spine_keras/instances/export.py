"""Export an instance run for teams without spine_keras: the network as a TensorFlow SavedModel (`serve`:
float32 (B, P, P, P, 2) -> {"mask", "complete"}), `instances.json` (everything the traversal needs), and
`reference_traversal.py`, the single-file traversal that needs only numpy, SimpleITK and TensorFlow."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from spine_keras.instances import reference
from spine_keras.instances.runfolder import METADATA_NAME, MODEL_NAME, read_metadata

SAVED_MODEL_DIR = "saved_model"
SCRIPT_NAME = "reference_traversal.py"


def load_run_model(run_dir: Path):
    """The Keras network of a run folder (without its training losses)."""
    import keras

    from spine_keras.errors import UserError

    path = run_dir / MODEL_NAME
    if not path.is_file():
        raise UserError(f"'{run_dir}' is no spine-instances run: {MODEL_NAME} is missing")
    return keras.models.load_model(path, compile=False)


def export_run(run_dir: Path, out: Path) -> Path:
    """Write the export folder `out` (absent or empty; built in a hidden folder beside it, then moved into place)."""
    metadata = read_metadata(run_dir)
    model = load_run_model(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.export(str(staging / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        (staging / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        shutil.copyfile(reference.__file__, staging / SCRIPT_NAME)
        if out.is_dir():  # an empty folder the user made for it
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
