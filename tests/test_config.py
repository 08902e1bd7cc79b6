from pathlib import Path

import pytest

from samdistill.config import DistillConfig, dump_config, load_config, parse_overrides, shipped_recipes
from samdistill.errors import UserError

# The recipes in the source tree; each must also be found by name, through the installed package.
RECIPES = sorted((Path(__file__).resolve().parents[1] / "src" / "samdistill" / "recipes").glob("*.yaml"))


def test_the_shipped_recipes_are_package_data():
    assert sorted(shipped_recipes()) == sorted(p.stem for p in RECIPES)
    assert {"kdsam", "knowsam", "nas"} <= set(shipped_recipes())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # by name, from anywhere: not a path relative to the checkout
    cfg = load_config(recipe.stem)
    assert isinstance(cfg, DistillConfig) and cfg.method == recipe.stem
    assert load_config(recipe) == cfg  # a recipe given as a path still works


def test_a_recipe_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kdsam").write_text("seed: 11\n")
    assert load_config("kdsam").seed == 11
    with pytest.raises(UserError, match="recipe not found: ../kdsam .*shipped recipe: kdsam, knowsam, meanteacher, nas"):
        load_config("../kdsam")  # a name never walks out of the recipes folder


def test_an_empty_or_binary_recipe_is_a_one_line_error(tmp_path):
    """An empty recipe would silently train with the method's bare defaults (not a shipped recipe's); a checkpoint
    given as --recipe would be a UnicodeDecodeError traceback."""
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(UserError, match=r"recipe .*empty.yaml is empty \(no keys\).*kdsam, knowsam"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "weights.pt").write_bytes(b"PK\x03\x04\x81\xff binary")
    with pytest.raises(UserError, match=r"weights.pt is not a YAML text file \(byte 0x81 at offset 4"):
        load_config(tmp_path / "weights.pt")


def test_overrides_are_dotted_and_typed():
    cfg = load_config("kdsam", ["stage1.epochs=3", "student.name=repvit_m0_9", "stages=[2]", "cache.flips=true"])
    assert cfg.stage1.epochs == 3 and cfg.student.name == "repvit_m0_9" and cfg.stages == [2] and cfg.cache.flips
    assert cfg.precision == "auto" and load_config("knowsam", ["precision=bf16"]).precision == "bf16"
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("stage1.epoch=3", "unknown config key 'stage1.epoch'; did you mean 'stage1.epochs'"),
        ("stage2.optim.learning_rate=1", "unknown config key 'stage2.optim.learning_rate'"),
        ("stage1.epochs=many", "bad config value for 'stage1.epochs'"),
        ("stage2.optim.lr=-1", "greater than 0"),
        ("noequals", "key=value"),
        ("precision=fp16", "bad config value for 'precision'"),
        ("device=mps precision=bf16", "precision=bf16 trains on cpu or cuda"),
    ],
)
def test_bad_keys_and_values_are_named(override, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("[", r"\[")) as exc:
        load_config("kdsam", override.split())
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 200  # one short line, never the whole config


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("kdsam", ["seed=7"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(UserError, match="recipe not found"):
        load_config("nope")


def test_data_labels_is_a_list_of_foreground_values():
    assert load_config("kdsam", ["data.labels=[1,2]"]).data.labels == [1, 2]
    assert load_config("kdsam").data.labels is None
    for bad in ("data.labels=[0,1]", "data.labels=[]", "data.labels=two"):
        with pytest.raises(UserError, match="'data.labels'"):
            load_config("kdsam", [bad])


def test_distill_labels_option_sets_data_labels(tmp_path, monkeypatch):
    import samdistill.api
    from samdistill.cli import main

    seen = []

    def fake_distill(cfg, out, resume=False):
        seen.append(cfg)
        raise UserError("stop here")

    monkeypatch.setattr(samdistill.api, "distill", fake_distill)
    assert main(["distill", "--data", "synthetic:n=5", "--out", str(tmp_path / "r"), "--labels", "1,2"]) == 2
    assert main(["distill", "--data", "synthetic:n=5", "--out", str(tmp_path / "r"), "data.labels=[2]"]) == 2
    assert [c.data.labels for c in seen] == [[1, 2], [2]]
    assert main(["distill", "--data", "synthetic:n=5", "--out", str(tmp_path / "r"), "--labels", "x"]) == 2
    assert len(seen) == 2  # a bad --labels stops before the run


# --- one config per method: a run carries its own method's sections only ------------------------------------


def test_each_recipe_validates_into_its_methods_config():
    from samdistill.methods import METHODS

    assert {e.name for e in METHODS} <= set(shipped_recipes())  # every method ships a recipe
    for name in shipped_recipes():
        cfg = load_config(name)
        assert type(cfg) is METHODS.entry(cfg.method).meta["config"]


def test_a_kdsam_run_carries_no_other_methods_sections(tmp_path):
    cfg = load_config("kdsam")
    assert not hasattr(cfg, "knowsam") and not hasattr(cfg, "nas")
    dump_config(cfg, tmp_path / "config.yaml")
    saved = (tmp_path / "config.yaml").read_text()
    assert "knowsam:" not in saved and "nas:" not in saved and "stage1:" in saved
    ks = load_config("knowsam")
    assert not hasattr(ks, "stage1") and not hasattr(ks, "student") and ks.knowsam.labeled == 0.1
    assert load_config(None).method == "kdsam"  # no method named: kdsam, as before


@pytest.mark.parametrize(
    "recipe,override,message",
    [
        ("kdsam", "knowsam.labeled=0.1", "config key 'knowsam.labeled' belongs to method knowsam, not kdsam"),
        ("kdsam", "nas.train.genotype=g.json", "config key 'nas.train.genotype' belongs to method nas, not kdsam"),
        ("knowsam", "stage1.epochs=3", "config key 'stage1.epochs' belongs to method kdsam, not knowsam"),
        ("knowsam", "stages=[1]", "config key 'stages' belongs to method kdsam, not knowsam"),
    ],
)
def test_another_methods_key_is_a_one_line_error_naming_its_method(recipe, override, message):
    with pytest.raises(UserError) as exc:
        load_config(recipe, [override])
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(UserError, match=r"unknown method 'kdsm'; did you mean 'kdsam'\? \(valid: kdsam, knowsam, meanteacher, nas"):
        load_config("kdsam", ["method=kdsm"])


def test_a_method_registered_with_another_methods_config_is_refused():
    from samdistill.methods.kdsam import KDSAMConfig
    from samdistill.methods.registry import MethodRegistry

    with pytest.raises(ValueError, match="method 'toy': its config KDSAMConfig has method='kdsam'"):
        MethodRegistry("method").register("toy", config=KDSAMConfig)


def test_an_epochs_override_alone_runs_exactly_those_epochs():
    """The recipe's ``min_steps`` floor applies to its own epochs: ``stage1.epochs=3`` means 3 epochs (a quick
    run, or a run config saved before the floor existed, read back), unless ``min_steps`` is given with it."""
    assert load_config("kdsam").stage1.min_steps == 1760
    quick = load_config("kdsam", ["stage1.epochs=3"])
    assert quick.stage1.epochs == 3 and quick.stage1.min_steps is None
    assert load_config("kdsam", ["stage1.epochs=3", "stage1.min_steps=50"]).stage1.min_steps == 50
    assert load_config("kdsam", {"stage1": {"epochs": 3, "min_steps": None}}).stage1.min_steps is None
    assert load_config("kdsam", ["stage2.epochs=3"]).stage1.min_steps == 1760  # only the section it names
    assert load_config("kdsam", ["stage1.mse=2"]).stage1.min_steps == 1760
