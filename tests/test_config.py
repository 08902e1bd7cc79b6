from pathlib import Path

import pytest

from samdistill.config import DistillConfig, dump_config, load_config, parse_overrides
from samdistill.errors import UserError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, DistillConfig) and cfg.method == recipe.stem


def test_overrides_are_dotted_and_typed():
    cfg = load_config("kdsam", ["stage1.epochs=3", "student.name=repvit_m0_9", "stages=[2]", "cache.flips=true"])
    assert cfg.stage1.epochs == 3 and cfg.student.name == "repvit_m0_9" and cfg.stages == [2] and cfg.cache.flips
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("stage1.epoch=3", "unknown config key 'stage1.epoch'; did you mean 'stage1.epochs'"),
        ("stage2.optim.learning_rate=1", "unknown config key 'stage2.optim.learning_rate'"),
        ("stage1.epochs=many", "bad config value for 'stage1.epochs'"),
        ("stage2.optim.lr=-1", "greater than 0"),
        ("noequals", "key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        load_config("kdsam", [override])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("kdsam", ["seed=7"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(UserError, match="recipe not found"):
        load_config("nope")
