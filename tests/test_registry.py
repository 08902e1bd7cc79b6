import pytest

from samdistill.errors import UserError
from samdistill.registry import Registry


def test_register_get_and_meta():
    reg = Registry("widget")

    @reg.register("alpha", size=3)
    def build_alpha():
        """Alpha widget."""
        return "A"

    assert reg.get("alpha")() == "A"
    assert reg.entry("alpha").meta == {"size": 3}
    assert reg.entry("alpha").summary == "Alpha widget."
    assert "alpha" in reg and "beta" not in reg
    assert reg.names() == ["alpha"]


def test_unknown_name_suggests_closest_and_lists_valid():
    reg = Registry("widget")
    reg.register("litemedsam")(lambda: 1)
    reg.register("mobilesam")(lambda: 2)
    with pytest.raises(UserError) as exc:
        reg.get("litemedsm")
    msg = str(exc.value)
    assert "Did you mean 'litemedsam'" in msg
    assert "mobilesam" in msg


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("x")(lambda: 1)
    with pytest.raises(ValueError):
        reg.register("x")(lambda: 2)


def test_all_teachers_and_datasets_are_registered():
    from samdistill import list_datasets, list_models

    assert set(list_models("teacher")) == {
        "litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b", "mobilesam", "test_sam"
    }
    assert set(list_datasets()) == {
        "kvasir_seg", "hc18", "busi", "isic2017", "cvc_clinicdb", "ph2", "folder", "synthetic"
    }
