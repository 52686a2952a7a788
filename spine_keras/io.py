"""Input lists and volumes with their geometry (NRRD through pynrrd; NIfTI, MHA and NRRD through SimpleITK).

Arrays are indexed in ITK index order (i, j, k), the order pynrrd returns and the order the shared
data's README describes; spacing, origin and direction follow the same axes, in LPS physical space.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from spine_keras.console import captured_stderr, one_line
from spine_keras.errors import CaseError, UserError

NRRD_SUFFIXES = (".nrrd", ".nhdr")
ITK_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NRRD_SUFFIXES + ITK_SUFFIXES
_CASE_SUFFIX = re.compile(r"[_\-.](image|img|volume|vol|t1|t2|mri)$", re.IGNORECASE)


@dataclasses.dataclass
class Volume:
    """A 3D scan (optionally with a trailing channel axis) and where it lies in patient space."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray  # (ndim, ndim); column i is the unit vector of array axis i in LPS space

    @property
    def spatial_ndim(self) -> int:
        return len(self.spacing)

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == self.spatial_ndim else int(self.array.shape[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[: self.spatial_ndim])


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One `image,label` line of an input list; `label` is None for image-only lists."""

    source: str  # "list.txt line 3", for messages
    image: Path
    label: Path | None
    case_id: str


def suffix_of(path: Path | str) -> str:
    """The volume-format suffix of a path, `.nii.gz` included, lower-cased."""
    name = str(path).lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def case_id_from_path(path: Path) -> str:
    """A readable case id from an image file name: `VB2_02_image.nrrd` -> `VB2_02`."""
    name = Path(path).name
    suffix = suffix_of(name)
    stem = name[: len(name) - len(suffix)] if name.lower().endswith(suffix) else Path(name).stem
    return _CASE_SUFFIX.sub("", stem) or stem


def parse_list(list_path: Path | str, require_label: bool = True) -> list[ListEntry]:
    """Parse an `image,label` list: fields trimmed, blanks and `#` comments skipped, paths relative to the list.

    A UTF-8 byte-order mark is ignored. The same image file twice (after resolving links) is an error naming both
    lines, so one patient never becomes two cases; a case id repeated by a different file gets its line number
    (`VB2_02_line7`), so every entry stays addressable.
    """
    list_path = Path(list_path)
    text = _read_list_text(list_path)
    base = list_path.resolve().parent
    entries: list[ListEntry] = []
    seen: set[str] = set()
    images: dict[Path, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{list_path} line {number}"
        fields = _list_fields(raw, where, require_label)
        if not fields:
            continue
        paths = [_resolve_list_path(field, base, where) for field in fields]
        _check_unique_image(paths[0], number, where, images)
        case_id = _unique_case_id(case_id_from_path(paths[0]), number, seen)
        entries.append(ListEntry(where, paths[0], paths[1] if len(paths) == 2 else None, case_id))
    if not entries:
        raise UserError(f"list file '{list_path}' has no 'image,label' lines")
    return entries


def _read_list_text(list_path: Path) -> str:
    """The list file's text; UserError when it is missing or not UTF-8 text."""
    if list_path.is_dir():
        raise UserError(f"list file '{list_path}' is a folder; give a text file with one 'image,label' pair a line")
    if not list_path.is_file():
        raise UserError(f"list file '{list_path}' not found; give a text file with one 'image,label' pair a line")
    try:
        return list_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read list file '{list_path}' as UTF-8 text ({exc})") from exc


def _check_unique_image(image: Path, number: int, where: str, images: dict[Path, int]) -> None:
    """UserError when `image` (links resolved) was already listed; records its line number otherwise."""
    key = image.resolve()
    if key in images:
        raise UserError(
            f"{where}: image '{image}' is already listed on line {images[key]}; the same scan twice would count one "
            "patient as two cases (and could put it on both sides of a split): remove one of the lines"
        )
    images[key] = number


def _list_fields(raw: str, where: str, require_label: bool) -> list[str]:
    """The trimmed fields of one list line (empty for a blank or comment line); UserError when malformed."""
    line = raw.split("#", 1)[0].strip()
    if not line:
        return []
    fields = [f.strip() for f in line.split(",")]
    if len(fields) > 2 or (require_label and len(fields) != 2) or any(not f for f in fields):
        expected = "'image,label'" if require_label else "'image' or 'image,label'"
        raise UserError(f"{where}: malformed line '{raw.strip()}'; expected {expected}")
    return fields


def _resolve_list_path(field: str, base: Path, where: str) -> Path:
    """A list field as a normalized path, relative ones against the list's folder; UserError for unknown types."""
    path = Path(os.path.normpath(field if Path(field).is_absolute() else base / field))
    if suffix_of(path) not in SUPPORTED_SUFFIXES:
        raise UserError(f"{where}: unsupported file type '{path.name}'; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return path


def _unique_case_id(case_id: str, number: int, seen: set[str]) -> str:
    """`case_id`, or `<case_id>_line<number>` when an earlier line already used it; records the first use."""
    if case_id in seen:
        return f"{case_id}_line{number}"
    seen.add(case_id)
    return case_id


def _read_nrrd(path: Path) -> Volume:
    import nrrd

    data, header = nrrd.read(str(path))
    dims = data.ndim
    directions = header.get("space directions")
    spatial = list(range(dims))
    if directions is not None:
        directions = np.asarray(directions, dtype=float)
        spatial = [i for i, row in enumerate(directions) if np.all(np.isfinite(row))]
        nonspatial = [i for i in range(dims) if i not in spatial]
        if nonspatial:
            if len(nonspatial) > 1:
                raise CaseError(f"'{path}' has {len(nonspatial)} non-spatial axes; expected at most one channel axis")
            data = np.moveaxis(data, nonspatial[0], -1)
        vectors = directions[spatial]
        spacing = np.linalg.norm(vectors, axis=1)
        _check_spacing(spacing, path)
        direction = (vectors / spacing[:, None]).T
    else:
        spacings = header.get("spacings")
        spacing = np.asarray(spacings if spacings is not None else np.ones(dims), dtype=float)
        direction = np.eye(dims)
    origin = np.asarray(header.get("space origin", np.zeros(len(spacing))), dtype=float)
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("right-anterior-superior", "ras"):
        flip = np.diag([-1.0, -1.0, 1.0])
        direction, origin = flip @ direction, flip @ origin
    return Volume(data, tuple(float(s) for s in spacing), tuple(float(o) for o in origin), direction)


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    ndim = image.GetDimension()
    order = tuple(reversed(range(ndim)))
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.transpose(array, order + (ndim,))
    else:
        array = np.transpose(array, order)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(ndim, ndim)
    return Volume(np.ascontiguousarray(array), tuple(image.GetSpacing()), tuple(image.GetOrigin()), direction)


@contextmanager
def _reader_messages(path: Path) -> Iterator[None]:
    """Keep what ITK's C++ readers print on stderr (MetaIO and NIfTI warnings, several lines each) off the user's
    terminal: a RuntimeError gets it joined to its message, on one line; another error (e.g. the geometry checks')
    drops it, since its own message says what is wrong; after a successful read it becomes one `warning:` line."""
    failed: RuntimeError | None = None
    with captured_stderr() as captured:
        try:
            yield
        except RuntimeError as exc:
            failed = exc
    noise = "".join(captured)
    if failed is not None:
        raise RuntimeError(one_line(f"{failed}\n{noise}")) from failed
    if noise.strip():
        print(f"warning: '{path}': {one_line(noise)[:300]}", file=sys.stderr)


def _check_spacing(spacing: np.ndarray, path: Path) -> None:
    """CaseError unless every spacing is a positive finite number."""
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise CaseError(
            f"'{path}' has spacing ({shown}) in its header; every spacing must be a positive finite number of mm "
            "(fix the header)"
        )


def _check_geometry(volume: Volume, path: Path) -> None:
    """CaseError for impossible geometry in a header: bad spacing, a non-finite or singular direction, a non-finite
    origin (each would give NaN coordinates, or a division by zero when resampling)."""
    _check_spacing(np.asarray(volume.spacing, dtype=float), path)
    direction = np.asarray(volume.direction, dtype=float)
    n = volume.spatial_ndim
    if direction.shape != (n, n) or not np.all(np.isfinite(direction)):
        raise CaseError(f"'{path}' has a non-finite or malformed direction matrix in its header (fix the header)")
    if abs(np.linalg.det(direction)) < 1e-6:
        raise CaseError(
            f"'{path}' has a singular direction matrix in its header (its axes are not independent; fix the header)"
        )
    if not np.all(np.isfinite(np.asarray(volume.origin, dtype=float))):
        shown = ", ".join(f"{o:g}" for o in volume.origin)
        raise CaseError(f"'{path}' has a non-finite origin ({shown}) in its header (fix the header)")


def read_volume(path: Path | str, source: str | None = None) -> Volume:
    """Read a volume and its geometry; any failure, and impossible geometry (zero, negative or non-finite spacing,
    a non-finite or singular direction, a non-finite origin), becomes a `CaseError` naming the file (and list line)."""
    path = Path(path)
    where = f"{source}: " if source else ""
    if not path.exists():
        raise CaseError(
            f"{where}file '{path}' not found; check the path (relative paths resolve against the list's folder)"
        )
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise CaseError(f"{where}unsupported file type '{path.name}'; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        with _reader_messages(path):
            volume = _read_nrrd(path) if suffix in NRRD_SUFFIXES else _read_itk(path)
            _check_geometry(volume, path)
    except CaseError as exc:
        raise CaseError(f"{where}{exc}") from exc
    except _reader_errors() as exc:
        raise CaseError(
            f"{where}cannot read '{path}' ({type(exc).__name__}: {one_line(str(exc))}); the file is corrupt or "
            "not a volume"
        ) from exc
    if volume.spatial_ndim not in (2, 3):
        raise CaseError(f"{where}'{path}' has {volume.spatial_ndim} spatial dimensions; expected a 3D volume")
    return volume


def _reader_errors() -> tuple[type[BaseException], ...]:
    """What pynrrd and SimpleITK raise for a corrupt, truncated or foreign file (SimpleITK: RuntimeError)."""
    import nrrd

    return (
        nrrd.NRRDError,
        OSError,
        EOFError,
        RuntimeError,
        ValueError,
        KeyError,
        IndexError,
        StopIteration,
        zlib.error,
    )


def _write_nrrd(volume: Volume, path: Path) -> None:
    import nrrd

    directions = (volume.direction * np.asarray(volume.spacing)[None, :]).T
    array = volume.array
    header: dict = {
        "space": "left-posterior-superior" if volume.spatial_ndim == 3 else None,
        "space origin": np.asarray(volume.origin, dtype=float),
        "encoding": "gzip",
    }
    if volume.spatial_ndim != 3:
        header = {"space dimension": volume.spatial_ndim, "space origin": header["space origin"], "encoding": "gzip"}
    if volume.channels > 1 or array.ndim > volume.spatial_ndim:
        nan_row = np.full((1, volume.spatial_ndim), np.nan)
        directions = np.concatenate([directions, nan_row])
        header["kinds"] = ["domain"] * volume.spatial_ndim + ["vector"]
    header = {k: v for k, v in header.items() if v is not None}
    header["space directions"] = directions
    nrrd.write(str(path), array, header, detached_header=suffix_of(path) == ".nhdr")


def _write_itk(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    ndim = volume.spatial_ndim
    order = tuple(reversed(range(ndim)))
    vector = volume.array.ndim > ndim
    array = np.transpose(volume.array, order + ((ndim,) if vector else ()))
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in volume.direction.ravel()])
    sitk.WriteImage(image, str(path), useCompression=True)


def write_volume(volume: Volume, path: Path | str) -> None:
    """Write a volume with its geometry, atomically: a temporary file beside the target, renamed at the end."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(
            f"cannot write '{path.name}': unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".nhdr" or suffix == ".mhd":  # detached headers name their data file: write in place
        (_write_nrrd if suffix == ".nhdr" else _write_itk)(volume, path)
        return
    with atomic_path(path) as tmp:
        (_write_nrrd if suffix in NRRD_SUFFIXES else _write_itk)(volume, tmp)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename onto `path` on success, delete on failure."""
    path = Path(path)
    suffix = suffix_of(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; the renamed file should get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
