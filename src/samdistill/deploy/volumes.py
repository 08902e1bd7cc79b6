"""3D volumes (NIfTI files, DICOM series folders), segmented slice by slice from one box, as MedSAM
users do.

The user gives a box on one slice; that slice is segmented, and the box for each next slice (up and
down) is the tight box of the previous slice's mask, grown by ``margin`` px; propagation stops where
the mask vanishes. The mask is written as NIfTI with the input's affine and header (geometry kept),
with a CSV of the segmented volume in voxels and mm³. Needs the ``volumes`` extra (nibabel, pydicom).

A DICOM series (a folder of single-slice files of one series; other files are skipped) is checked from
its headers first, then stacked in slice order (position along the slice normal, else InstanceNumber,
else file name; each fallback for a missing tag is stated, see :func:`load_dicom_series`), rescaled with
RescaleSlope/Intercept, and held as
``rows x columns x slices`` so that a box's x is the DICOM column and y the row, as a viewer shows
them; the mask is written as NIfTI whose affine carries the series geometry (spacing, orientation,
position, converted from DICOM's LPS to NIfTI's RAS).

Sizes are checked on decoded voxels, from the header before any voxel is read: at most
:data:`MAX_VOXELS` (``SAMDISTILL_MAX_VOXELS`` overrides it).
"""

from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from samdistill.data.images import env_limit
from samdistill.data.prompts import tight_box
from samdistill.errors import DataError, UserError, listing


VOXELS_ENV = "SAMDISTILL_MAX_VOXELS"
#: Largest volume we decode, in voxels: 2**28 = 268 M (512 x 512 x 1024: a long CT of 1000 slices fits).
#: ``predict`` holds it (a DICOM series as float32) while windowing it to uint8, ~12 bytes per voxel at the
#: peak (~3.2 GB at the limit). The demo, a shared server, has its own lower default.
#: ``SAMDISTILL_MAX_VOXELS`` overrides both.
MAX_VOXELS = 2**28

#: File suffixes a DICOM series file may have (Siemens exports ``.IMA``; many PACS exports have none).
DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".ima")


def max_voxels() -> int:
    """The volume voxel limit in force: ``SAMDISTILL_MAX_VOXELS`` if set, else :data:`MAX_VOXELS`."""
    return env_limit(VOXELS_ENV, MAX_VOXELS)


def check_voxels(shape: tuple[int, ...], label: str, limit: int | None = None, path: str | None = None) -> None:
    """Refuse a volume of ``shape`` (from its header, before any voxel is read) over ``limit`` voxels
    (default :func:`max_voxels`): a :class:`DataError` naming it, its shape and the limit."""
    limit = max_voxels() if limit is None else int(limit)
    n = math.prod(int(s) for s in shape)
    if n > limit:
        raise DataError(f"{label} is {' x '.join(str(int(s)) for s in shape)} = {n / 1e6:.1f} M voxels, over the "
                        f"limit of {limit / 1e6:.1f} M voxels (set {VOXELS_ENV} to change it)", path)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (nibabel's and pydicom's messages can span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _nib():
    try:
        import nibabel as nib
    except ImportError:
        raise UserError("NIfTI volumes need nibabel: pip install 'samdistill[volumes]'") from None
    return nib


def load_volume(path: str | Path, max_voxels: int | None = None):
    """``(nibabel image, 3D array)`` of a NIfTI file; its shape is checked against ``max_voxels`` (default
    :func:`max_voxels`) from the header, before the voxels are read (or, for ``.nii.gz``, decompressed)."""
    nib = _nib()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"volume not found: {p}")
    try:
        img = nib.load(str(p))  # reads the header only; the voxels stay in the file until dataobj is read
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:
        raise DataError(f"cannot read NIfTI volume {p}: {_one_line(exc)}", str(p)) from None
    if len(shape) != 3:
        raise DataError(f"{p} has {len(shape)} dimensions ({' x '.join(map(str, shape))}); expected a 3D volume",
                        str(p))
    check_voxels(shape, f"volume {p}", max_voxels, str(p))
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"cannot read NIfTI volume {p}: {_one_line(exc)}", str(p)) from None
    return img, data


def is_dicom_series(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in DICOM_SUFFIXES for f in p.iterdir() if f.is_file())


def _numbers(ds, tag: str, n: int) -> list[float] | None:
    """Tag ``tag`` of ``ds`` as ``n`` finite numbers, or None when missing, empty or malformed."""
    try:
        v = ds.get(tag)  # a malformed value (e.g. "abc" in a DS tag) raises here, on conversion
        if v is None:
            return None
        vals = [float(x) for x in (v if hasattr(v, "__len__") and not isinstance(v, (str, bytes)) else [v])]
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        return None
    return vals if len(vals) == n and all(math.isfinite(x) for x in vals) else None


def _number(ds, tag: str) -> float | None:
    v = _numbers(ds, tag, 1)
    return None if v is None else v[0]


def _has_value(ds, tag: str) -> bool:
    """Whether ``tag`` is in ``ds`` with a value (readable or not)."""
    try:
        return tag in ds and ds[tag].value not in (None, "", b"")
    except Exception:  # a value that fails conversion is there, just malformed
        return True


def _natural(name: str) -> list:
    """Sort key that puts 2.dcm before 10.dcm."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _some(files: list[Path]) -> str:
    return listing([f.name for f in files], 3)


def _read_dicom_header(f: Path):
    """The header of ``f`` without its pixel data, or None when ``f`` is not a DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(f, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception as exc:
        raise DataError(f"cannot read DICOM file {f}: {_one_line(exc)}", str(f)) from None
    if f.suffix.lower() not in DICOM_SUFFIXES:
        return None  # a README, a .txt, a thumbnail next to the series
    # No 128-byte preamble + "DICM" (older and some exported files are a bare dataset): take it when it
    # parses into an image header, else it is not DICOM.
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        return ds if int(ds.Rows) > 0 and int(ds.Columns) > 0 else None
    except Exception:
        return None


def load_dicom_series(folder: str | Path, *, max_voxels: int | None = None,
                      notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(volume rows x cols x slices float32, 4x4 RAS affine)`` of the DICOM series in ``folder``.

    Every header is read first, without pixel data: the folder must hold one series of single-frame
    greyscale slices of one size, at most ``max_voxels`` (default :func:`max_voxels`) in all, before any
    pixel is decoded. Files that are not DICOM images (DICOMDIR, a README, a structured report) are skipped.
    Missing tags fall back, each fallback appended to ``notes`` (``predict`` prints them and writes them to
    volumes.csv): no ImagePositionPatient -> slices in InstanceNumber order (no InstanceNumber either: file
    name order), spaced by SpacingBetweenSlices or SliceThickness (else 1 mm); no PixelSpacing ->
    ImagerPixelSpacing, else 1 mm; no ImageOrientationPatient -> axial. No RescaleSlope/RescaleIntercept means
    1 and 0 (stored values are the values, as in MR), without a note.
    """
    try:
        import pydicom
    except ImportError:
        raise UserError("DICOM series need pydicom: pip install 'samdistill[volumes]'") from None
    folder = Path(folder)
    notes = [] if notes is None else notes
    if not folder.is_dir():
        raise UserError(f"DICOM series folder not found: {folder}")
    slices: list[tuple[Path, Any]] = []
    sizes: dict[Path, tuple[int, int]] = {}
    not_dicom: list[Path] = []
    not_images: list[Path] = []
    subfolders = []
    for f in sorted(folder.iterdir()):
        if f.is_dir():
            subfolders.append(f)
            continue
        if not f.is_file() or f.name.startswith("."):
            continue
        ds = _read_dicom_header(f)
        if ds is None:
            not_dicom.append(f)
            continue
        rows, cols = _number(ds, "Rows"), _number(ds, "Columns")
        if not rows or not cols or rows < 1 or cols < 1:
            not_images.append(f)  # DICOMDIR, a report, a presentation state: DICOM, but no image
        else:
            slices.append((f, ds))
            sizes[f] = (int(rows), int(cols))
    if not slices:
        why = []
        if not_images:
            why.append(f"{len(not_images)} DICOM file(s) without an image (no Rows/Columns): {_some(not_images)}")
        if not_dicom:
            why.append(f"{len(not_dicom)} file(s) that are not DICOM: {_some(not_dicom)}")
        if subfolders:
            why.append(f"subfolders {_some(subfolders)}: give the folder of one series")
        raise UserError(f"no DICOM image files in {folder}" + (f" ({'; '.join(why)})" if why else ""))
    skipped = not_images + not_dicom
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) that are not DICOM images: {_some(skipped)}")

    # One series: a folder with two is refused, naming them (which one was meant is the user's call).
    groups: dict[str, list[Path]] = {}
    named: dict[str, str] = {}
    for f, ds in slices:
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append(f)
        label = " ".join(str(ds.get(t, "") or "") for t in ("SeriesNumber", "SeriesDescription")).strip()
        named.setdefault(uid, f"series {label}" if label else (uid or "no SeriesInstanceUID"))
    if len(groups) > 1:
        desc = "; ".join(f"{named[uid]} ({len(fs)} files, e.g. {fs[0].name})" for uid, fs in groups.items())
        raise UserError(f"{folder} holds {len(groups)} DICOM series: {desc}; put one series per folder")

    # Each file one greyscale slice of the first one's size, checked from the headers.
    first_f, first = slices[0]
    rows, cols = sizes[first_f]
    for f, ds in slices:
        frames = _number(ds, "NumberOfFrames") or 1
        if frames > 1:
            raise DataError(f"{f} is a multi-frame DICOM ({int(frames)} frames); samdistill reads a series of "
                            "single-slice files (convert it to NIfTI, e.g. with dcm2niix)", str(f))
        spp = _number(ds, "SamplesPerPixel") or 1
        if spp != 1:
            raise DataError(f"{f} is a colour image (SamplesPerPixel {int(spp)}); a volume's slices are greyscale",
                            str(f))
        if sizes[f] != (rows, cols):
            raise DataError(f"{f} is {sizes[f][1]}x{sizes[f][0]} but the series' first slice {first_f.name} "
                            f"is {cols}x{rows}", str(f))
    check_voxels((rows, cols, len(slices)), f"DICOM series {folder}", max_voxels, str(folder))

    # Orientation: one for the series (a slice at another one is e.g. a localizer filed in the series).
    iops = [(f, _numbers(ds, "ImageOrientationPatient", 6)) for f, ds in slices]
    usable = []
    for f, v in iops:
        if v is not None:
            r, c = np.asarray(v[:3]), np.asarray(v[3:])
            if np.linalg.norm(r) > 1e-3 and np.linalg.norm(c) > 1e-3 and np.linalg.norm(np.cross(r, c)) > 1e-3:
                usable.append((f, r / np.linalg.norm(r), c / np.linalg.norm(c)))
    if usable:
        _, row_dir, col_dir = usable[0]
        for f, r, c in usable[1:]:
            if not (np.allclose(r, row_dir, atol=1e-3) and np.allclose(c, col_dir, atol=1e-3)):
                this, theirs = np.round(np.r_[r, c], 4).tolist(), np.round(np.r_[row_dir, col_dir], 4).tolist()
                raise DataError(f"{f} is oriented differently from {usable[0][0].name} (ImageOrientationPatient "
                                f"{this} vs {theirs}); a localizer or a second acquisition in the series? Keep one "
                                "orientation per folder", str(f))
        if len(usable) < len(slices):
            notes.append(f"{len(slices) - len(usable)} file(s) have no usable ImageOrientationPatient (e.g. "
                         f"{next(f.name for f, v in iops if f not in {u[0] for u in usable})}); the others' is used")
    else:
        row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        notes.append(f"no usable ImageOrientationPatient (e.g. in {first_f.name}): axial orientation assumed")
    normal = np.cross(row_dir, col_dir)

    # Slice order and spacing.
    positions = [_numbers(ds, "ImagePositionPatient", 3) for _, ds in slices]
    if all(p is not None for p in positions):
        order = sorted(range(len(slices)), key=lambda i: float(np.asarray(positions[i]) @ normal))
        slices = [slices[i] for i in order]
        pos = np.asarray([positions[i] for i in order], dtype=np.float64)
        z = pos @ normal
        gaps = np.diff(z)
        if len(gaps) and gaps.min() < 1e-3:
            i = int(np.argmin(gaps))
            raise DataError(f"{slices[i][0].name} and {slices[i + 1][0].name} in {folder} are at the same position "
                            f"({z[i]:.3f} mm along the slice normal): duplicate files or two acquisitions in one "
                            "series; keep one of each", str(slices[i + 1][0]))
        if len(gaps) and gaps.max() - gaps.min() > 0.1 * float(np.median(gaps)):
            i = int(np.argmax(np.abs(gaps - np.median(gaps))))
            notes.append(f"uneven slice spacing: {gaps[i]:.3f} mm between {slices[i][0].name} and "
                         f"{slices[i + 1][0].name}, {np.median(gaps):.3f} mm typical (a missing slice?); the mask's "
                         "geometry uses the mean spacing, so mm3 are approximate")
        p0 = pos[0]
        step = (pos[-1] - pos[0]) / (len(slices) - 1) if len(slices) > 1 else None
    else:
        missing = [f for (f, _), p in zip(slices, positions) if p is None]
        numbers = [_number(ds, "InstanceNumber") for _, ds in slices]
        if all(n is not None for n in numbers):
            order = sorted(range(len(slices)), key=lambda i: numbers[i])
            slices = [slices[i] for i in order]
            how = "InstanceNumber order"
        else:
            slices.sort(key=lambda fd: _natural(fd[0].name))
            how = "file name order (no InstanceNumber either)"
        notes.append(f"{len(missing)} file(s) have no ImagePositionPatient (e.g. {missing[0].name}): slices are in "
                     f"{how}, at the origin")
        p0, step = None, None
    if step is None:
        spacing = _number(slices[0][1], "SpacingBetweenSlices") or _number(slices[0][1], "SliceThickness")
        if not spacing or spacing <= 0:
            spacing = 1.0
            if len(slices) > 1:
                notes.append(f"no SpacingBetweenSlices or SliceThickness in {slices[0][0].name}: 1 mm between "
                             "slices assumed (mm3 are in those units)")
        step = normal * spacing
    spacing_rc = _numbers(first, "PixelSpacing", 2)
    if spacing_rc is None or min(spacing_rc) <= 0:
        spacing_rc = _numbers(first, "ImagerPixelSpacing", 2)
        if spacing_rc is None or min(spacing_rc) <= 0:
            spacing_rc = [1.0, 1.0]
            notes.append(f"no usable PixelSpacing in {first_f.name}: 1 mm pixels assumed (mm3 are in those units)")
        else:
            notes.append(f"no PixelSpacing in {first_f.name}: ImagerPixelSpacing {spacing_rc} used")
    dr, dc = spacing_rc  # between rows, between columns

    # Pixels, one file at a time, into one array (the headers said how big it is).
    volume = np.empty((rows, cols, len(slices)), dtype=np.float32)
    bad_rescale = []
    for k, (f, _) in enumerate(slices):
        try:
            ds = pydicom.dcmread(f, force=True)
            a = ds.pixel_array
        except Exception as exc:
            detail = " ".join(str(exc).split()) if isinstance(exc, AttributeError) else _one_line(exc)
            raise DataError(f"cannot decode the pixels of {f}: {detail}", str(f)) from None
        if a.shape != (rows, cols):
            raise DataError(f"{f} holds pixels of shape {a.shape}, not the {rows} x {cols} its header says", str(f))
        slope, intercept = _number(ds, "RescaleSlope"), _number(ds, "RescaleIntercept")
        for tag, v in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
            if v is None and _has_value(ds, tag):
                bad_rescale.append(f"{tag} of {f.name}")
        volume[:, :, k] = a.astype(np.float32) * (slope or 1.0) + (intercept or 0.0)
    if bad_rescale:
        notes.append(f"unreadable {', '.join(bad_rescale[:3])}{' ...' if len(bad_rescale) > 3 else ''}: "
                     "taken as slope 1, intercept 0")
    lps = np.eye(4)
    lps[:3, 0] = col_dir * dr  # array axis 0 = row index: moves along the column direction
    lps[:3, 1] = row_dir * dc  # array axis 1 = column index: moves along the row direction
    lps[:3, 2] = step
    lps[:3, 3] = p0 if p0 is not None else 0.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    return volume, affine


def to_uint8(volume: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Window the whole volume once (percentiles), so that every slice shares one intensity scale.
    In place on one float32 copy: 8 bytes per voxel at the peak (with the percentile's copy), where
    out-of-place float64 temporaries took 20; the same uint8 values."""
    v = np.array(volume, dtype=np.float32)
    lo, hi = (float(x) for x in np.percentile(v, [lo_pct, hi_pct]))
    if hi <= lo:
        hi = lo + 1.0
    v -= lo
    v /= hi - lo
    np.clip(v, 0, 1, out=v)
    v *= 255
    return v.astype(np.uint8)


def mask_image(mask: np.ndarray, affine: np.ndarray, header=None):
    """The mask as a ``uint8`` NIfTI image with the input's affine (and header, when it came from NIfTI)."""
    nib = _nib()
    if header is not None:
        header = header.copy()
        header.set_data_dtype(np.uint8)
    return nib.Nifti1Image(mask.astype(np.uint8), affine, header)


def segment_volume(predictor, volume: np.ndarray, box: list[float] | np.ndarray, slice_index: int, *, axis: int = 2,
                   margin: float = 3.0, progress: bool = True,
                   on_slice: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Boolean mask of ``volume``'s shape; ``box`` (x0, y0, x1, y1) is in the pixels of slice ``slice_index``
    along ``axis`` (x = column, y = row of that 2D slice). ``on_slice(done, total)`` is called after each
    segmented slice (``total`` = slices in the volume, an upper bound: propagation stops where the mask
    vanishes)."""
    if not 0 <= slice_index < volume.shape[axis]:
        raise UserError(f"slice {slice_index} outside the volume (0..{volume.shape[axis] - 1} along axis {axis})")
    vol8 = np.moveaxis(to_uint8(volume), axis, 0)
    mask = np.zeros(vol8.shape, dtype=bool)
    h, w = vol8.shape[1:]

    def run(z: int, b: np.ndarray) -> np.ndarray:
        predictor.set_image(vol8[z])
        return predictor.predict(boxes=b[None])[0][0]

    first = run(slice_index, np.asarray(box, dtype=np.float64))
    mask[slice_index] = first
    done = 1
    if on_slice is not None:
        on_slice(done, vol8.shape[0])
    bar = tqdm(total=vol8.shape[0] - 1, desc="propagate", unit="slice", disable=not progress)
    for step in (1, -1):
        prev = first
        z = slice_index + step
        while 0 <= z < vol8.shape[0] and prev.any():
            b = tight_box(prev)
            b = np.array([max(0, b[0] - margin), max(0, b[1] - margin), min(w - 1, b[2] + margin), min(h - 1, b[3] + margin)])
            prev = run(z, b)
            mask[z] = prev
            z += step
            bar.update(1)
            done += 1
            if on_slice is not None:
                on_slice(done, vol8.shape[0])
    bar.close()
    return np.moveaxis(mask, 0, axis)


def predict_volume(predictor, path: str | Path, box, slice_index: int, out_dir: str | Path, *, axis: int = 2,
                   progress: bool = True, final_dir: str | Path | None = None) -> dict[str, Any]:
    """Segment a NIfTI volume (or a DICOM series folder) from one box; write ``<name>_mask.nii.gz`` (same
    geometry) and ``volumes.csv``. A DICOM series' fallbacks for missing tags are printed (stderr) as
    ``note: ...`` and kept in the row's (and the CSV's) ``notes``. ``final_dir``: where ``out_dir`` will end
    up when it is a staged folder (the mask is named there in the row and the CSV); default ``out_dir``."""
    nib = _nib()
    notes: list[str] = []
    if Path(path).is_dir():
        data, affine = load_dicom_series(path, notes=notes)
        header = None
        for n in notes:
            print(f"note: {Path(path).name}: {n}", file=sys.stderr)
    else:
        img, data = load_volume(path)
        affine, header = img.affine, img.header
    mask = segment_volume(predictor, data, box, slice_index, axis=axis, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(path).name.replace(".nii.gz", "").replace(".nii", "")
    mask_img = mask_image(mask, affine, header)
    mask_path = out / f"{name}_mask.nii.gz"
    nib.save(mask_img, str(mask_path))
    voxel_mm3 = float(np.prod(mask_img.header.get_zooms()[:3]))
    slices = int(np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(1).sum())
    row = {"volume": Path(path).name, "voxels": int(mask.sum()), "voxel_mm3": voxel_mm3,
           "volume_mm3": float(mask.sum() * voxel_mm3), "slices": slices,
           "mask": str(Path(final_dir) / mask_path.name if final_dir is not None else mask_path),
           "notes": "; ".join(notes)}
    with open(out / "volumes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    return row
