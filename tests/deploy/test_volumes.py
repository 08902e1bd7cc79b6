"""NIfTI round trip keeps geometry; the box propagates through the slices."""

import nibabel as nib
import numpy as np
import pytest

from samdistill.cli import main
from samdistill.deploy.volumes import predict_volume, segment_volume
from samdistill.errors import UserError


class ThresholdPredictor:
    """Stands in for a model: foreground = bright pixels inside the box (so propagation is testable)."""

    def set_image(self, image):
        self.image = image

    def predict(self, boxes):
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[0])
        m = np.zeros(self.image.shape[:2], bool)
        m[y0 : y1 + 1, x0 : x1 + 1] = self.image[y0 : y1 + 1, x0 : x1 + 1] > 128
        return m[None], np.ones(1)


def _sphere(shape=(40, 48, 30), c=(20, 24, 15), r=8.0):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r**2


def test_box_on_one_slice_propagates_through_the_object():
    ball = _sphere()
    vol = np.where(ball, 200.0, 20.0) + np.random.default_rng(0).normal(0, 3, ball.shape)
    # axis 2 slices are (40 rows x 48 cols); the ball's centre slice is 15; box in (x=col, y=row)
    mask = segment_volume(ThresholdPredictor(), vol, [14, 10, 34, 30], 15, axis=2, progress=False)
    assert mask.shape == ball.shape
    assert (mask == ball).mean() > 0.99  # every slice of the ball was reached, nothing outside it
    with pytest.raises(UserError, match="outside the volume"):
        segment_volume(ThresholdPredictor(), vol, [0, 0, 5, 5], 99, progress=False)


def test_nifti_round_trip_keeps_geometry(tmp_path):
    ball = _sphere()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    nib.save(nib.Nifti1Image(np.where(ball, 300, -50).astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    row = predict_volume(ThresholdPredictor(), tmp_path / "ct.nii.gz", [14, 10, 34, 30], 15, tmp_path / "out",
                         progress=False)
    out = nib.load(row["mask"])
    assert np.allclose(out.affine, affine) and np.allclose(out.header.get_zooms(), (0.8, 0.8, 2.5))
    assert out.shape == ball.shape and row["voxels"] == int(np.asarray(out.dataobj).sum())
    assert row["volume_mm3"] == pytest.approx(row["voxels"] * 0.8 * 0.8 * 2.5)
    assert (tmp_path / "out" / "volumes.csv").exists()


def test_cli_volume_with_a_tiny_model_and_bad_box(tmp_path):
    nib.save(nib.Nifti1Image(np.where(_sphere(), 300, 0).astype(np.int16), np.eye(4)), str(tmp_path / "v.nii.gz"))
    rc = main(["predict", "test_sam", "--input", str(tmp_path / "v.nii.gz"), "--box", "14,10,34,30", "--slice", "15",
               "--out", str(tmp_path / "o")])
    assert rc == 0 and (tmp_path / "o" / "v_mask.nii.gz").exists()
    assert main(["predict", "test_sam", "--input", str(tmp_path / "v.nii.gz"), "--box", "1,2,3", "--slice", "1",
                 "--out", str(tmp_path / "o2")]) == 2


def _write_dicom_series(folder, vol, spacing=(0.7, 0.9), thickness=2.0, origin=(-50.0, 20.0, 100.0)):
    """Single-slice DICOM files of a rows x cols x slices volume, written in shuffled order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    order = np.random.default_rng(1).permutation(vol.shape[2])
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.Rows, ds.Columns = vol.shape[:2]
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = thickness
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * thickness]
        ds.InstanceNumber = int(vol.shape[2] - k)  # deliberately not the spatial order
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (vol[:, :, k] + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    (folder / "README.txt").write_text("not dicom")


def test_dicom_series_is_stacked_in_space_and_mask_keeps_its_geometry(tmp_path):
    from samdistill.deploy.volumes import load_dicom_series

    ball = _sphere()  # 40 rows x 48 cols x 30 slices
    vol = np.where(ball, 300, -50).astype(np.int16)
    _write_dicom_series(tmp_path / "series", vol)
    data, affine = load_dicom_series(tmp_path / "series")
    assert data.shape == vol.shape and np.array_equal(data, vol.astype(np.float32))  # spatial order, rescaled
    # voxel (row, col, slice) -> RAS mm: rows advance along +y (LPS) = -y (RAS), columns along +x (LPS) = -x (RAS)
    assert np.allclose(affine @ [0, 0, 0, 1], [50.0, -20.0, 100.0, 1])
    assert np.allclose(affine @ [1, 0, 0, 1], [50.0, -20.7, 100.0, 1])
    assert np.allclose(affine @ [0, 1, 0, 1], [49.1, -20.0, 100.0, 1])
    assert np.allclose(affine @ [0, 0, 1, 1], [50.0, -20.0, 102.0, 1])
    row = predict_volume(ThresholdPredictor(), tmp_path / "series", [14, 10, 34, 30], 15, tmp_path / "out",
                         progress=False)
    out = nib.load(row["mask"])
    assert np.allclose(out.affine, affine) and (np.asarray(out.dataobj).astype(bool) == ball).mean() > 0.99
    assert row["volume_mm3"] == pytest.approx(row["voxels"] * 0.7 * 0.9 * 2.0)


def test_cli_predicts_a_dicom_folder_and_rejects_mixed_series(tmp_path):
    _write_dicom_series(tmp_path / "s", np.where(_sphere(), 300, 0).astype(np.int16))
    rc = main(["predict", "test_sam", "--input", str(tmp_path / "s"), "--box", "14,10,34,30", "--slice", "15",
               "--out", str(tmp_path / "o")])
    assert rc == 0 and (tmp_path / "o" / "s_mask.nii.gz").exists()
    _write_dicom_series(tmp_path / "t", np.zeros((40, 48, 3), np.int16))
    import shutil

    for f in (tmp_path / "t").glob("*.dcm"):
        shutil.copy(f, tmp_path / "s" / f"other_{f.name}")
    assert main(["predict", "test_sam", "--input", str(tmp_path / "s"), "--box", "14,10,34,30", "--slice", "1",
                 "--out", str(tmp_path / "o2")]) == 2


# ---------------------------------------------------------------------------------------- decoded-size limits
def nifti_header_only(path, shape, dtype=np.uint8):
    """A .nii.gz whose header says ``shape`` but that holds no voxels (~100 bytes): reading its voxels could
    only fail, so an error naming its shape proves the shape was checked before any voxel was read."""
    import gzip

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\x00" * 4))
    return path


def test_nifti_over_the_voxel_limit_is_refused_from_its_header(tmp_path, monkeypatch, capsys):
    import tracemalloc

    from samdistill.deploy.volumes import VOXELS_ENV, load_volume

    monkeypatch.delenv(VOXELS_ENV, raising=False)
    bomb = nifti_header_only(tmp_path / "bomb.nii.gz", (1024, 1024, 300))  # 315 M voxels > 268 M
    assert bomb.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as exc:
            load_volume(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(exc.value) == (f"volume {bomb} is 1024 x 1024 x 300 = 314.6 M voxels, over the limit of 268.4 M "
                              f"voxels (set {VOXELS_ENV} to change it)")
    assert peak < 20 * 2**20  # nothing the size of the volume was allocated
    assert main(["predict", "test_sam", "--input", str(bomb), "--box", "1,1,5,5", "--slice", "0",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "314.6 M voxels" in err and "\n" not in err
    cut = nifti_header_only(tmp_path / "cut.nii.gz", (10, 10, 10))  # under the limit, voxels missing
    with pytest.raises(UserError, match=r"cannot read NIfTI volume .*cut\.nii\.gz: OSError: Expected 1000") as exc:
        load_volume(cut)
    assert "\n" not in str(exc.value)  # nibabel's message spans two lines
    nifti_header_only(tmp_path / "t.nii.gz", (8, 8, 8, 2))  # 4D: refused from the header too
    with pytest.raises(UserError, match=r"has 4 dimensions \(8 x 8 x 8 x 2\); expected a 3D volume"):
        load_volume(tmp_path / "t.nii.gz")


def test_voxel_limit_comes_from_the_environment(tmp_path, monkeypatch):
    from samdistill.deploy.volumes import VOXELS_ENV, load_volume

    nib.save(nib.Nifti1Image(np.zeros((10, 10, 11), np.int16), np.eye(4)), str(tmp_path / "v.nii.gz"))
    monkeypatch.setenv(VOXELS_ENV, "1000")
    with pytest.raises(UserError, match=r"10 x 10 x 11 = 0\.0 M voxels, over the limit of 0\.0 M voxels"):
        load_volume(tmp_path / "v.nii.gz")
    monkeypatch.setenv(VOXELS_ENV, "1100")
    assert load_volume(tmp_path / "v.nii.gz")[1].shape == (10, 10, 11)
    monkeypatch.setenv(VOXELS_ENV, "1e3.5")
    with pytest.raises(UserError, match=f"{VOXELS_ENV}='1e3.5' is not a positive whole number"):
        load_volume(tmp_path / "v.nii.gz")


# ------------------------------------------------------------------------------- DICOM as a hospital sends it
def _edit_series(folder, edit):
    import pydicom

    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        edit(f, ds)
        ds.save_as(f)


def _drop(*tags):
    def edit(f, ds):
        for t in tags:
            if t in ds:
                delattr(ds, t)
    return edit


def test_dicom_series_without_geometry_tags_loads_with_stated_fallbacks(tmp_path):
    from samdistill.deploy.volumes import load_dicom_series

    vol = np.where(_sphere(), 300, -50).astype(np.int16)
    _write_dicom_series(tmp_path / "s", vol)
    _edit_series(tmp_path / "s", _drop("PixelSpacing", "SliceThickness", "ImagePositionPatient", "RescaleSlope",
                                       "RescaleIntercept"))
    notes: list[str] = []
    data, affine = load_dicom_series(tmp_path / "s", notes=notes)
    # InstanceNumber order (the writer numbers them against the spatial order); no rescale: stored values
    assert np.array_equal(data, (vol[:, :, ::-1] + 1024).astype(np.float32))
    assert np.allclose(np.abs(affine[:3, :3]).sum(0), [1, 1, 1]) and np.allclose(affine[:3, 3], 0)
    text = " | ".join(notes)
    assert "README.txt" in text and "no usable PixelSpacing in IM0000.dcm: 1 mm pixels" in text
    assert "30 file(s) have no ImagePositionPatient" in text and "InstanceNumber order" in text
    assert "1 mm between slices" in text
    _edit_series(tmp_path / "s", _drop("InstanceNumber"))
    notes = []
    data, _ = load_dicom_series(tmp_path / "s", notes=notes)
    assert np.array_equal(data, (vol + 1024).astype(np.float32))  # IM0000.dcm ... IM0029.dcm: file name order
    assert "file name order" in " | ".join(notes)
    row = predict_volume(ThresholdPredictor(), tmp_path / "s", [14, 10, 34, 30], 15, tmp_path / "out",
                         progress=False)
    assert "file name order" in row["notes"] and row["volume_mm3"] == pytest.approx(row["voxels"] * 1.0)
    assert "file name order" in (tmp_path / "out" / "volumes.csv").read_text()


def test_dicom_without_position_or_number_is_stacked_in_natural_file_name_order(tmp_path):
    from samdistill.deploy.volumes import load_dicom_series

    vol = np.arange(12, dtype=np.int16)[None, None, :].repeat(4, 0).repeat(5, 1)  # slice k holds value k
    _write_dicom_series(tmp_path / "s", vol)
    _edit_series(tmp_path / "s", _drop("ImagePositionPatient", "InstanceNumber"))
    for k in range(12):
        (tmp_path / "s" / f"IM{k:04d}.dcm").rename(tmp_path / "s" / f"{k + 1}.dcm")  # 1.dcm ... 12.dcm
    data, _ = load_dicom_series(tmp_path / "s")
    assert data[0, 0].tolist() == list(range(12))  # 2.dcm before 10.dcm


def test_dicom_malformed_tags_fall_back_instead_of_a_traceback(tmp_path):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from samdistill.deploy.volumes import load_dicom_series

    vol = np.where(_sphere(), 300, -50).astype(np.int16)
    _write_dicom_series(tmp_path / "s", vol)

    def edit(f, ds):
        ds[0x00280030] = RawDataElement(Tag(0x00280030), "DS", 4, b"abc ", 0, False, True)  # PixelSpacing
        ds.ImageOrientationPatient = [1, 0, 0]  # 3 of 6 numbers
        ds[0x00281053] = RawDataElement(Tag(0x00281053), "DS", 2, b"x ", 0, False, True)  # RescaleSlope

    _edit_series(tmp_path / "s", edit)
    notes: list[str] = []
    data, affine = load_dicom_series(tmp_path / "s", notes=notes)
    assert np.array_equal(data, vol.astype(np.float32))  # still in space, intercept still applied
    assert np.allclose(affine @ [0, 0, 1, 1], [50.0, -20.0, 102.0, 1])  # positions still give the geometry
    text = " | ".join(notes)
    assert "no usable PixelSpacing" in text and "axial orientation assumed" in text
    assert "unreadable RescaleSlope of IM0000.dcm" in text


def test_dicom_duplicate_positions_are_an_error_naming_the_files(tmp_path):
    from samdistill.deploy.volumes import load_dicom_series

    _write_dicom_series(tmp_path / "s", np.zeros((8, 8, 4), np.int16))

    def edit(f, ds):
        if f.name == "IM0002.dcm":
            ds.ImagePositionPatient = [-50.0, 20.0, 102.0]  # where IM0001.dcm is

    _edit_series(tmp_path / "s", edit)
    with pytest.raises(UserError, match=r"^IM0001\.dcm and IM0002\.dcm in .* are at the same position"):
        load_dicom_series(tmp_path / "s")


def test_dicom_folder_as_exported_dicomdir_no_preamble_and_other_files(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from samdistill.deploy.volumes import load_dicom_series

    vol = np.where(_sphere(), 300, -50).astype(np.int16)
    _write_dicom_series(tmp_path / "s", vol)
    for f in sorted((tmp_path / "s").glob("*.dcm")):  # bare datasets, no preamble + "DICM", no suffix
        ds = pydicom.dcmread(f)
        ds.preamble = None
        ds.save_as(f.with_suffix(""), enforce_file_format=False)
        f.unlink()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory (a DICOMDIR): no image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dd = Dataset()
    dd.file_meta = meta
    dd.FileSetID = "EXPORT"
    dd.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
    (tmp_path / "s" / "notes.txt").write_text("export log")
    notes: list[str] = []
    data, _ = load_dicom_series(tmp_path / "s", notes=notes)
    assert np.array_equal(data, vol.astype(np.float32))
    assert "skipped 3 file(s) that are not DICOM images: DICOMDIR, README.txt, notes.txt" in notes
    # the folder above the series: no images there, and the message says where they are
    with pytest.raises(UserError, match=r"no DICOM image files in .*subfolders s: give the folder of one series"):
        load_dicom_series(tmp_path)


def test_dicom_mixed_series_names_them(tmp_path):
    import shutil

    from samdistill.deploy.volumes import load_dicom_series

    _write_dicom_series(tmp_path / "s", np.zeros((8, 8, 5), np.int16))
    _write_dicom_series(tmp_path / "t", np.zeros((8, 8, 3), np.int16))
    _edit_series(tmp_path / "t", lambda f, ds: (setattr(ds, "SeriesNumber", 4),
                                                setattr(ds, "SeriesDescription", "scout")))
    for f in (tmp_path / "t").glob("*.dcm"):
        shutil.copy(f, tmp_path / "s" / f"x{f.name}")
    with pytest.raises(UserError, match=r"holds 2 DICOM series: 1\.2\.[\d.]+ \(5 files, e\.g\. IM0000\.dcm\); "
                                        r"series 4 scout \(3 files, e\.g\. xIM0000\.dcm\); put one series per folder"):
        load_dicom_series(tmp_path / "s")


def test_dicom_voxel_limit_is_checked_from_headers_before_pixel_data(tmp_path, monkeypatch):
    import pydicom

    from samdistill.deploy.volumes import VOXELS_ENV, load_dicom_series

    _write_dicom_series(tmp_path / "s", np.zeros((40, 48, 30), np.int16))
    reads = []
    real = pydicom.dcmread

    def spy(f, *a, **kw):
        reads.append(kw.get("stop_before_pixels", False))
        return real(f, *a, **kw)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    monkeypatch.setenv(VOXELS_ENV, "50000")  # 40 x 48 x 30 = 57600
    with pytest.raises(UserError, match=r"DICOM series .* is 40 x 48 x 30 = 0\.1 M voxels, over the limit of "
                                        r"0\.1 M voxels \(set SAMDISTILL_MAX_VOXELS"):
        load_dicom_series(tmp_path / "s")
    assert reads and all(reads)  # headers only: no file was read with its pixel data
    monkeypatch.setenv(VOXELS_ENV, "57600")
    assert load_dicom_series(tmp_path / "s")[0].shape == (40, 48, 30)
