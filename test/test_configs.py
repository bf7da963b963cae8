"""Every shipped recipe loads, names a registered dataset and class set, and states a sane schedule."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from human_parsing_ros.models import ARCHITECTURES, is_multi_person
from training.config import DEFAULTS, load_config, parse_overrides, recipe_changes
from training.datasets import DATASET_NAMES
from training.instances import INSTANCE_DATASETS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "training" / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("protocol_"))
PROTOCOLS = sorted(CONFIG_DIR.glob("protocol_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_loads(path):
    config = load_config(path)
    multi_person = is_multi_person(config["model"]["architecture"])
    assert config["dataset"]["name"] in (INSTANCE_DATASETS if multi_person else DATASET_NAMES)
    assert config["stage1"]["cpa_epoch"] <= config["stage1"]["epochs"]
    assert config["stage2"]["sampling"] in ("pra", "prn", "none")
    if config["model"]["architecture"] not in ARCHITECTURES:
        pytest.skip(f"{config['model']['architecture']} is not implemented yet (the model-zoo issue)")


@pytest.mark.parametrize("path", [p for p in CONFIGS if load_config(p)["model"]["init"]],
                         ids=lambda p: p.stem)
def test_a_recipe_that_fine_tunes_starts_from_another_recipes_output_with_its_network(path):
    """model.init names a recipe's exported file (runs/<name>/<weights>), and the network and classes match."""
    config = load_config(path)
    sources = [load_config(p) for p in CONFIGS]
    source = next(c for c in sources if config["model"]["init"] == f"{c['output_dir']}/{c['export']['weights']}")
    assert replace(source.model, init=None) == replace(config.model, init=None)  # a source may fine-tune too
    assert source["dataset"]["class_set"] == config["dataset"]["class_set"]


@pytest.mark.parametrize("path", PROTOCOLS, ids=[p.stem for p in PROTOCOLS])
def test_protocol_rows_give_valid_recipes_at_an_equal_budget(path, tmp_path):
    from training.config import check_recipe
    from training.protocol import all_rows, load_protocol, row_config

    protocol = load_protocol(path)
    for model in protocol["models"]:
        for row in [*protocol["rows"], *protocol.get("ablations", {})]:
            config = row_config(protocol, model, 0, row, tmp_path / row)
            check_recipe(config)
            cycles = config.get("self_correction") or {}
            total = (config["stage1"]["epochs"] + cycles.get("cycles", 0) * cycles.get("cycle_epochs", 0)
                     + config["stage2"]["epochs"])
            assert total == protocol["epochs"], row
            if not all_rows(protocol)[row].get("own_budget"):  # those keep their recipe's own main schedule
                assert config["stage1"]["schedule_epochs"] == protocol["epochs"]
            assert config["model"]["architecture"] in ARCHITECTURES


# What each paper states about its training, as (section, key): value. DTPR (Sensors 2022, Sec. 4.1 and
# 4.4): 400x400, batch 16, SGD lr 0.01, cosine over the 100-epoch baseline, DTPR branching at epoch 70
# for 30 epochs of stage 2 with PRA and Eq. 1's summed loss, CPA of the training data after epoch 3,
# rotation +-10 degrees.
# RIM (Computer Science 2023, Sec. 3-4): DTPR's schedule, RBSM = PRA on the training CPA, ILM with
# margin 1 and lambda 1 in stage 2 only. C-DLinkNet (Sec. 3.2): ResNet-101, 256x192 for training and
# testing, poly from 0.002, 120 epochs, batch 16, scale 0.5-1.5, flip test.
DTPR = {("input", "crop_size"): [400, 400], ("optim", "batch_size"): 16, ("optim", "lr"): 0.01,
        ("optim", "schedule"): "cosine", ("stage1", "epochs"): 70, ("stage1", "schedule_epochs"): 100,
        ("stage2", "epochs"): 30, ("stage1", "cpa_epoch"): 3, ("stage1", "cpa_source"): "train",
        ("stage2", "sampling"): "pra", ("stage2", "reduction"): "sum", ("input", "max_rotation"): 10.0,
        ("input", "eval_labels"): "original"}
PAPER_SETTINGS = {
    "dtpr": DTPR,
    "rim": {**DTPR, ("inter_class", "weight"): 1.0, ("inter_class", "margin"): 1.0,
            ("inter_class", "stages"): [2]},
    "cdlinknet": {("model", "architecture"): "cdlinknet", ("input", "crop_size"): [256, 192],
                  ("input", "eval_size"): [256, 192], ("input", "scale_range"): [0.5, 1.5],
                  ("input", "eval_labels"): "original", ("input", "eval_flip"): True,
                  ("optim", "batch_size"): 16, ("optim", "lr"): 0.002, ("optim", "schedule"): "poly",
                  ("stage1", "epochs"): 120, ("stage2", "epochs"): 0},
    # SCHP (its train.py): CE2P, 473x473, batch 16, lr 7e-3, momentum 0.9, weight decay 5e-4, 100 epochs then
    # 5 cycles of 10, SCHP's parsing loss, flip test.
    "schp": {("model", "architecture"): "ce2p", ("input", "crop_size"): [473, 473], ("optim", "batch_size"): 16,
             ("optim", "lr"): 0.007, ("optim", "momentum"): 0.9, ("optim", "weight_decay"): 0.0005,
             ("stage1", "epochs"): 100, ("stage1", "loss"): "ce_lovasz", ("stage2", "epochs"): 0,
             ("self_correction", "cycles"): 5, ("self_correction", "cycle_epochs"): 10,
             ("input", "eval_flip"): True, ("input", "eval_labels"): "original"},
    # RP R-CNN (ECCV 2020, Sec. 3.5 and 4.1): ResNet-50-FPN, batch 16, lr 0.02, steps at 105k and 125k of 135k
    # iterations, short side 512-864 with the long side <= 1400, 512 box and 16 parsing RoIs, the paper's loss
    # weights (the architecture's LOSS_WEIGHTS, so no recipe change).
    "rprcnn": {("model", "architecture"): "rp_rcnn", ("optim", "batch_size"): 16, ("optim", "lr"): 0.02,
               ("optim", "schedule"): "step", ("optim", "milestones"): [0.778, 0.926],
               ("multi_person", "short_sides"): list(range(512, 865, 32)), ("multi_person", "max_size"): 1400,
               ("multi_person", "loss_weights"): {}},
}
# Recipes that must claim a paper (so that dropping the claim cannot hide a drifted schedule).
PAPER_RECIPES = {"mhpv2_pspnet_r50": "dtpr", "lip_mobilenetv2": "dtpr", "mhpv2_rim_pspnet_r50": "rim",
                 "lip_cdlinknet_r101": "cdlinknet", "lip_schp": "schp", "cihp_rprcnn_r50": "rprcnn",
                 "mhpv2_rprcnn_r50": "rprcnn"}


def test_recipes_that_claim_a_paper_have_its_schedule():
    claims = {}
    for path in CONFIGS:
        config = load_config(path)
        if config["paper"] is None:
            continue
        assert config["paper"] in PAPER_SETTINGS, f"{path.name}: unknown paper {config['paper']!r}"
        claims[path.stem] = config["paper"]
        for (section, key), value in PAPER_SETTINGS[config["paper"]].items():
            plain = config.to_dict()[section][key]  # lists as recipes write them
            assert plain == value, f"{path.name}: {section}.{key} is {plain!r}"
        if config["paper"] == "rprcnn":
            args = config["model"]["args"]
            assert args["encoder"] == "resnet50" and args["parsing_rois"] == 16 and args["box_rois"] == 512
        if config["paper"] == "cdlinknet":
            assert config["model"]["args"]["encoder"] == "resnet101"
            assert config["model"]["args"]["output_stride"] == 16
    assert PAPER_RECIPES.items() <= claims.items()


def test_the_rim_recipe_runs_ilm_in_stage_2_only():
    from training.dtpr import make_stage_loss

    config = load_config(CONFIG_DIR / "mhpv2_rim_pspnet_r50.yaml")
    counts = {"pixels": torch.tensor([100.0, 10.0, 1.0]), "images": torch.tensor([5.0, 3.0, 1.0])}
    cpa = torch.tensor([0.9, 0.5, 0.1])
    stage1, stage2 = (make_stage_loss(config, stage, cpa, counts) for stage in (1, 2))
    assert stage1.inter_class_weight == 0.0 and stage1.sampler is None
    assert stage2.inter_class_weight == 1.0 and stage2.inter_class_margin == 1.0
    torch.testing.assert_close(stage2.sampler.keep_prob, torch.tensor([0.1 / 0.9, 0.2, 1.0]))  # PRA, eta = min
    assert DEFAULTS["inter_class"]["stages"] == [2]  # the default follows the paper too


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


@pytest.mark.parametrize("override", ["stage2.reduction=mean", "stage2.prn_counts=regions", "optim.schedule=linear",
                                      "input.eval_labels=half", "stage1.loss=dice"])
def test_bad_choices_are_refused_before_training_naming_the_key(override):
    from training.config import check_recipe

    key, value = override.split("=")
    with pytest.raises(ValueError, match=f"{key} '{value}' is not one of"):
        check_recipe(load_config(overrides=parse_overrides([override])))


def test_recipe_changes_name_what_a_resume_changes_and_nothing_else():
    """A setting newer than a checkpoint counts as its default there; an empty section filled in names only
    the new keys; ignored keys and everything below them are left out."""
    saved = load_config(overrides={"optim": {"lr": 0.01}, "dataset": {"options": {}}}).to_dict()  # as stored
    del saved["optim"]["min_lr_factor"]  # a checkpoint from before the setting existed
    assert recipe_changes(saved, load_config(overrides={"optim": {"lr": 0.01}})) == []
    changed = load_config(overrides={"optim": {"lr": 0.02, "min_lr_factor": 0.5},
                                     "dataset": {"options": {"ids": [1, 2]}}, "output_dir": "elsewhere"})
    assert recipe_changes(saved, changed, ignore=("output_dir",)) == [
        "dataset.options.ids (unset) -> [1, 2]", "optim.lr 0.01 -> 0.02",
        f"optim.min_lr_factor {DEFAULTS['optim']['min_lr_factor']} -> 0.5"]
    assert recipe_changes(saved, changed, ignore=("optim", "dataset", "output_dir")) == []



def test_a_loaded_recipe_is_frozen_typed_sections_with_the_defaults_keys_and_gives_plain_data_back():
    import dataclasses

    config = load_config(overrides={"optim": {"lr": 0.02}, "stage1": {"epochs": 4}})
    assert config.to_dict() == {**DEFAULTS, "optim": {**DEFAULTS["optim"], "lr": 0.02},
                                "stage1": {**DEFAULTS["stage1"], "epochs": 4}, "output_dir": "runs/run"}
    assert config.optim.lr == 0.02 and config.stage1.epochs == 4 and config.input.crop_size == (400, 400)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.lr = 0.1
    changed = replace(config, optim=replace(config.optim, lr=0.1))
    assert changed.optim.lr == 0.1 and config.optim.lr == 0.02


def test_an_older_checkpoints_recipe_loads_with_the_newer_settings_at_their_defaults():
    from training.config import saved_recipe

    saved = load_config(overrides={"optim": {"lr": 0.03}}).to_dict()
    del saved["optim"]["min_lr_factor"], saved["multi_person"]
    saved["retired_setting"] = 1  # a key a later version dropped
    recipe = saved_recipe(saved)
    assert recipe.optim.lr == 0.03 and recipe.optim.min_lr_factor == DEFAULTS["optim"]["min_lr_factor"]
    assert recipe.multi_person.max_size == DEFAULTS["multi_person"]["max_size"]
