import json

from samdistill.cli import main
from samdistill.deploy.onnx import export_promptable
from samdistill.models.zoo import load_model, save_model


def test_bench_two_tiny_models_writes_table_json_and_png(tmp_path, tiny_model):
    student = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    export_promptable(tiny_model, tmp_path / "onnx")
    free = save_model(load_model("test_knowsam_student", teacher=tiny_model).eval(), tmp_path / "free.pt")
    rc = main(["bench", "test_sam", str(student), str(tmp_path / "onnx"), str(free), "--data", "synthetic:n=10,size=64",
               "--out", str(tmp_path / "b"), "--threads", "1"])
    assert rc == 0
    r = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [x["backend"] for x in r["rows"]] == ["torch", "torch", "onnx", "torch"]
    assert all(x["peak_memory_mb_batch16"] is None or x["peak_memory_mb_batch16"] >= 0 for x in r["rows"])
    assert all(0.0 <= x["coco_mask_ap"]["map"] <= 1.0 for x in r["rows"][:3])
    assert r["rows"][3]["n"] == 2 and r["rows"][3]["encoder_gmacs"] > 0  # prompt-free: scored without prompts
    assert r["rows"][0]["speedup_end_to_end_vs_first"] == 1.0
    # the ONNX copy of test_sam gives the same masks as test_sam itself
    assert abs(r["rows"][2]["dice"] - r["rows"][0]["dice"]) < 1e-3
    # ONNX counts the initializers actually in the graphs (unused prompt paths are not exported)
    assert 0.95 * r["rows"][0]["params_total"] < r["rows"][2]["params_total"] <= r["rows"][0]["params_total"]
    assert (tmp_path / "b" / "pareto.png").stat().st_size > 1000
    assert "img/s @16" in (tmp_path / "b" / "bench.md").read_text()
