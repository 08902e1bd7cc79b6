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
