"""3D volumes (NIfTI files, DICOM series folders), segmented slice by slice from one box, as MedSAM
users do.

The user gives a box on one slice; that slice is segmented, and the box for each next slice (up and
down) is the tight box of the previous slice's mask, grown by ``margin`` px; propagation stops where
the mask vanishes. The mask is written as NIfTI with the input's affine and header (geometry kept),
with a CSV of the segmented volume in voxels and mm³. Needs the ``volumes`` extra (nibabel, pydicom).

A DICOM series (a folder of single-slice files of one series) is stacked in slice order (position
along the slice normal, else InstanceNumber), rescaled with RescaleSlope/Intercept, and held as
``rows x columns x slices`` so that a box's x is the DICOM column and y the row, as a viewer shows
them; the mask is written as NIfTI whose affine carries the series geometry (spacing, orientation,
position, converted from DICOM's LPS to NIfTI's RAS).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from samdistill.data.prompts import tight_box
from samdistill.errors import UserError


def _nib():
    try:
        import nibabel as nib
    except ImportError:
        raise UserError("NIfTI volumes need nibabel: pip install 'samdistill[volumes]'") from None
    return nib


def load_volume(path: str | Path):
    nib = _nib()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"volume not found: {p}")
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise UserError(f"cannot read NIfTI volume {p}: {type(exc).__name__}: {exc}") from None
    if data.ndim != 3:
        raise UserError(f"{p} has {data.ndim} dimensions; expected a 3D volume")
    return img, data


def is_dicom_series(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() in (".dcm", ".dicom") or f.suffix == "" for f in p.iterdir() if f.is_file())


def load_dicom_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(volume rows x cols x slices float32, 4x4 RAS affine)`` of the DICOM series in ``folder``."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise UserError("DICOM series need pydicom: pip install 'samdistill[volumes]'") from None
    folder = Path(folder)
    slices = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError:
            continue  # not a DICOM file (e.g. a README next to the series)
        except Exception as exc:
            raise UserError(f"cannot read DICOM file {f}: {type(exc).__name__}: {exc}") from None
        if "PixelData" not in ds:
            continue
        slices.append((f, ds))
    if not slices:
        raise UserError(f"no DICOM image files in {folder}")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise UserError(f"{folder} holds {len(series)} DICOM series; put one series per folder")
    first = slices[0][1]
    iop = np.asarray(getattr(first, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)

    def position(ds) -> np.ndarray | None:
        ipp = getattr(ds, "ImagePositionPatient", None)
        return None if ipp is None else np.asarray(ipp, dtype=np.float64)

    if all(position(ds) is not None for _, ds in slices):
        slices.sort(key=lambda fd: float(position(fd[1]) @ normal))
    else:
        slices.sort(key=lambda fd: int(getattr(fd[1], "InstanceNumber", 0)))
    arrays = []
    for f, ds in slices:
        try:
            a = ds.pixel_array.astype(np.float32)
        except Exception as exc:
            raise UserError(f"cannot decode the pixels of {f}: {type(exc).__name__}: {exc}") from None
        if a.ndim != 2:
            raise UserError(f"{f} is not a single 2D slice (shape {a.shape})")
        if arrays and a.shape != arrays[0].shape:
            raise UserError(f"{f} is {a.shape[1]}x{a.shape[0]} but the series' first slice is "
                            f"{arrays[0].shape[1]}x{arrays[0].shape[0]}")
        arrays.append(a * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0))
    volume = np.stack(arrays, axis=-1)
    dr, dc = (float(v) for v in getattr(first, "PixelSpacing", [1, 1]))  # between rows, between columns
    p0 = position(slices[0][1])
    if p0 is not None and len(slices) > 1 and position(slices[-1][1]) is not None:
        step = (position(slices[-1][1]) - p0) / (len(slices) - 1)
    else:
        step = normal * float(getattr(first, "SliceThickness", 1) or 1)
    lps = np.eye(4)
    lps[:3, 0] = col_dir * dr  # array axis 0 = row index: moves along the column direction
    lps[:3, 1] = row_dir * dc  # array axis 1 = column index: moves along the row direction
    lps[:3, 2] = step
    lps[:3, 3] = p0 if p0 is not None else 0.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    return volume, affine


def to_uint8(volume: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Window the whole volume once (percentiles), so that every slice shares one intensity scale."""
    v = volume.astype(np.float32)
    lo, hi = np.percentile(v, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


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
                   progress: bool = True) -> dict[str, Any]:
    """Segment a NIfTI volume (or a DICOM series folder) from one box; write ``<name>_mask.nii.gz`` (same
    geometry) and ``volumes.csv``."""
    nib = _nib()
    if Path(path).is_dir():
        data, affine = load_dicom_series(path)
        header = None
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
           "volume_mm3": float(mask.sum() * voxel_mm3), "slices": slices, "mask": str(mask_path)}
    with open(out / "volumes.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    return row
