"""Every registered student: forward, backward with gradients reaching every trainable parameter,
the neck on the teacher's grid, checkpoint round trip."""

import pytest
import torch

from samdistill.errors import CheckpointError
from samdistill.models.students.promptable import BACKBONES
from samdistill.models.zoo import MODELS, list_models, load_model, save_model

STUDENTS = [n for n in list_models("student") if MODELS.entry(n).meta.get("backbone")]  # timm-backbone students


def test_every_backbone_has_a_full_and_a_test_variant():
    assert set(STUDENTS) == set(BACKBONES) | {f"test_{b}" for b in BACKBONES}
    others = set(list_models("student")) - set(STUDENTS)
    assert others == {"knowsam_student", "test_knowsam_student", "unet_student", "test_unet_student", "nas"}


@pytest.mark.parametrize("name", STUDENTS)
def test_student_forward_backward_reaches_every_parameter(name, tiny_model):
    torch.manual_seed(0)
    s = load_model(name, teacher=tiny_model).train()
    assert s.embedding_grid == tiny_model.embedding_grid and s.input_size == tiny_model.input_size
    x = torch.randn(2, 3, 64, 64)
    emb = s.encode(x)
    assert emb.shape == (2, 256, 16, 16)  # the teacher's grid
    logits, iou = s.decode(emb, boxes=torch.tensor([[4.0, 4.0, 40.0, 50.0], [10.0, 2.0, 60.0, 30.0]]))
    assert logits.shape == (2, 1, 64, 64)
    (emb.pow(2).mean() + logits.mean() + iou.mean()).backward()
    trainable = [(n, p) for n, p in s.named_parameters() if p.requires_grad]
    # multimask tokens and the no-mask/point embeddings are not used by a single box prompt
    unused = ("mask_tokens", "output_hypernetworks_mlps.1", "output_hypernetworks_mlps.2",
              "output_hypernetworks_mlps.3", "point_embeddings", "not_a_point_embed", "mask_downscaling")
    missing = [n for n, p in trainable if p.grad is None and not any(u in n for u in unused)]
    assert not missing, missing[:5]
    enc_missing = [n for n, p in s.image_encoder.named_parameters() if p.grad is None]
    assert not enc_missing, enc_missing[:5]
    # residual branches may start zero-initialised (timm's zero_init_last), so some grads are exactly 0,
    # but the signal must reach the stem and the neck
    stem = next(iter(s.image_encoder.backbone.parameters()))
    assert stem.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in s.image_encoder.neck.laterals.parameters())


def test_heads_start_from_the_teacher_and_slim_is_smaller(tiny_model):
    full = load_model("test_resnet18", teacher=tiny_model)
    slim = load_model("test_resnet18", teacher=tiny_model, decoder="slim")
    for a, b in zip(full.mask_decoder.state_dict().values(), tiny_model.mask_decoder.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(slim.mask_decoder.iou_token.weight, tiny_model.mask_decoder.iou_token.weight)
    assert torch.equal(full.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
                       tiny_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)


def test_slim_decoder_on_litemedsam_heads(litemedsam):
    slim = load_model("efficientvit_b0", teacher=litemedsam, decoder="slim")
    full = load_model("efficientvit_b0", teacher=litemedsam)
    assert slim.parameter_counts()["decoder"] < 0.5 * full.parameter_counts()["decoder"]
    assert full.embedding_grid == 64 and full.encode(torch.zeros(1, 3, 256, 256)).shape == (1, 256, 64, 64)


def test_student_checkpoint_round_trip(tmp_path, tiny_model):
    s = load_model("test_repvit_m0_9", teacher=tiny_model).eval()
    back = load_model(save_model(s, tmp_path / "student.pt"))
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(back.encode(x), s.encode(x))
    assert back.family == "test_repvit_m0_9" and back.preprocess == tiny_model.preprocess


def test_pretrained_never_downloads(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="never downloads"):
        load_model("test_resnet18", teacher=tiny_model, pretrained=True)
    with pytest.raises(CheckpointError, match="not found"):
        load_model("test_resnet18", teacher=tiny_model, pretrained=str(tmp_path / "none.safetensors"))
