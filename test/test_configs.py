"""Every shipped recipe loads, names a registered dataset and class set, and states a sane schedule."""
from __future__ import annotations

from pathlib import Path

import pytest

from human_parsing_ros.models import ARCHITECTURES
from training.config import DEFAULTS, load_config, parse_overrides
from training.datasets import DATASET_NAMES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "training" / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("protocol_"))
PROTOCOLS = sorted(CONFIG_DIR.glob("protocol_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_loads(path):
    config = load_config(path)
    assert config["dataset"]["name"] in DATASET_NAMES
    assert config["stage1"]["cpa_epoch"] <= config["stage1"]["epochs"]
    assert config["stage2"]["sampling"] in ("pra", "prn", "none")
    if config["model"]["architecture"] not in ARCHITECTURES:
        pytest.skip(f"{config['model']['architecture']} is not implemented yet (the model-zoo issue)")


@pytest.mark.parametrize("path", PROTOCOLS, ids=[p.stem for p in PROTOCOLS])
def test_protocol_rows_give_valid_recipes_at_an_equal_budget(path, tmp_path):
    from training.dtpr import check_losses
    from training.protocol import load_protocol, row_config

    protocol = load_protocol(path)
    for model in protocol["models"]:
        for row in [*protocol["rows"], *protocol.get("ablations", {})]:
            config = row_config(protocol, model, 0, row, tmp_path / row)
            check_losses(config)
            assert config["stage1"]["epochs"] + config["stage2"]["epochs"] == protocol["epochs"]
            assert config["stage1"]["schedule_epochs"] == protocol["epochs"]
            assert config["model"]["architecture"] in ARCHITECTURES


def test_the_paper_recipe_is_the_papers():
    config = load_config(Path(CONFIGS[0]).parent / "mhpv2_pspnet_r50.yaml")
    assert config["input"]["crop_size"] == [400, 400] and config["optim"]["batch_size"] == 16
    assert (config["stage1"]["epochs"], config["stage2"]["epochs"], config["stage1"]["cpa_epoch"]) == (70, 30, 3)
    assert config["optim"]["lr"] == 0.01


def test_unknown_keys_are_refused_and_overrides_nest():
    with pytest.raises(ValueError, match="stage3"):
        load_config(overrides={"stage3": {}})
    with pytest.raises(ValueError, match="epoch"):
        load_config(overrides={"stage1": {"epoch": 3}})
    recipe = CONFIGS[0].parent / "ccp_mobilenetv2.yaml"
    config = load_config(recipe, parse_overrides(["stage2.eta=0.25", "model.args.decoder_channels=64", "name=x"]))
    assert config["stage2"]["eta"] == 0.25 and config["output_dir"] == "runs/x"
    assert config["model"]["args"]["encoder"] == "mobilenet_v2"  # merged into the recipe's, not replaced
    assert config["model"]["args"]["decoder_channels"] == 64
    assert DEFAULTS["model"]["args"] == {}  # another architecture inherits no stray arguments


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    from training.config import load_config, parse_overrides

    assert parse_overrides(["optim.lr=1e12", "optim.weight_decay=5e-4", "name=1e-run"]) == {
        "optim": {"lr": 1e12, "weight_decay": 5e-4}, "name": "1e-run"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lr: 2E-3, weight_decay: 5e-4, momentum: 0.9}\nname: v1e5\n")
    config = load_config(recipe)
    assert config["optim"]["lr"] == 0.002 and config["optim"]["weight_decay"] == 0.0005
    assert config["name"] == "v1e5"
