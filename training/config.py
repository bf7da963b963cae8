"""Recipe files: YAML over these defaults. Every key a recipe may set is listed here."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from human_parsing_ros.errors import UserError, flattened
from training.recipe import Recipe
from training.sampling import keep_probabilities

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "output_dir": "runs/{name}",
    "device": "auto",            # auto | cpu | cuda
    "amp": "none",               # none | bf16 | fp16 (fp16 uses a GradScaler)
    "max_nonfinite_steps": 0,    # steps per epoch with a NaN/Inf loss skipped before the run stops (fp16: a few)
    "deterministic": True,       # torch.use_deterministic_algorithms (warn only)
    "paper": None,               # dtpr | rim | cdlinknet | schp | rprcnn: the recipe claims that paper's settings
                                 # (tested)
    "dataset": {
        "name": "ccp",
        "root": "../shared/data/ccp",
        "train_split": "train",
        "val_split": "val",
        "options": {},           # passed to build_dataset (e.g. ids: [...] for CCP subsets)
        "class_set": None,       # default: the dataset's own; another (e.g. hri) maps the labels on load
        "extra": [],             # more training data, each {name, root, split, options}, mapped to the same
                                 # class set (validation stays on this dataset's val_split)
    },
    "model": {
        "architecture": "deeplabv3plus",
        "args": {},                # the architecture's keyword arguments (recipes set encoder_weights: imagenet)
        "init": None,              # a weights file to fine-tune from (same architecture, args and classes)
    },
    "input": {
        "crop_size": [400, 400],   # the paper's crop
        "scale_range": [0.5, 2.0],
        "max_rotation": 10.0,
        "jitter": 0.2,
        "eval_size": None,         # network input for validation; None: each image's own size (batch 1)
        "eval_labels": "original", # original: logits upsampled to each label's own resolution (as papers report;
                                   # batch 1) | resized: labels resized to eval_size too (faster, not comparable)
        "eval_flip": False,        # flip test: mean of the logits of the image and its mirror (left/right swapped)
    },
    "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 16, "workers": 2,
              "eval_batch_size": 1,
              "schedule": "cosine",      # cosine | poly: lr x (1 - step / steps) ^ poly_power, per iteration |
                                         # step: lr x 0.1 at each of ``milestones`` (fractions of the run)
              "poly_power": 0.9,
              "milestones": [0.78, 0.93],  # RP R-CNN's CIHP schedule: 105k and 125k of 135k iterations
              "warmup_steps": 0,         # linear warm-up from lr / 3 over the first steps (detection recipes)
              "warmup_epochs": 0,        # the same in epochs (SCHP: 10), whatever the processes' steps per epoch;
                                         # either warm-up applies to each stage's schedule (stage 2 too)
              "warmup_start": None,      # the warm-up's first factor; None: 1/3 (SCHP: 0.01)
              "min_lr_factor": 0.0},     # where the schedules and self-correction's cycles end (SCHP: 0.01)
    "stage1": {
        "epochs": 70,
        "schedule_epochs": None,   # cosine length; None: epochs (more: stop early on a longer schedule)
        "loss": "ce",              # ce | focal | class_balanced | ce_lovasz (SCHP's: 0.5 CE + 0.5 Lovász-softmax)
        "cpa_epoch": 3,            # CPA recorded after this many epochs (the paper: 3)
        "cpa_source": "val",       # val | train: which confusion matrix gives CPA
    },
    "stage2": {
        "epochs": 30,              # 0 = baseline (stage 1 only)
        "trains": "auto",          # decoder | classifier (the paper's two readings) | auto: the architecture's own
        "sampling": "pra",         # pra (1/CPA) | prn (1/count) | none (``loss`` on every pixel)
        "prn_counts": "images",    # PRN's x_i: images containing the class (Eq. 2 samples regions) | pixels
        "reduction": "kept_mean",  # kept_mean: CE summed over the kept pixels / their number | sum: Eq. 1's sum,
                                   # divided by a batch's fixed pixel count N x H x W (so lr keeps its scale)
        "loss": "ce",              # ce | focal | class_balanced (sampling none only: PRA/PRN use CE)
        "eta": "min",              # float, or min | median | mean | qNN (derived from the scores)
        "floor": 0.0,              # lower bound on keep probabilities
        "lr": None,                # None: optim.lr
    },
    "self_correction": {         # SCHP's cycles after stage 1's main schedule (training/schp/cycles.py)
        "cycles": 0,               # SCHP: 5
        "cycle_epochs": 10,        # SCHP: 10
        "lr": None,                # each cycle's starting lr; None: optim.lr / 2 (SCHP's)
    },
    "multi_person": {            # RP R-CNN runs (architecture rp_rcnn; training/person_training.py)
        "epochs": None,            # the run's epochs (one stage); None: stage1.epochs (older recipes set that)
        "loss_weights": {},        # over the paper's (rp_rcnn LOSS_WEIGHTS: L_rpn + L_box + 2 L_par + 2 L_sem + L_res)
        "short_sides": None,       # training resize: the short side drawn from this list (the paper: 512-864)
        "max_size": 1400,          # the long side's cap (training and test resize)
        "test_short_side": None,   # evaluation: the network sees the short side at this (the paper: 800); None: as is
        "min_score": 0.5,          # persons kept in the merged map (evaluation; written into the weights file)
        "val_options": {},         # the validation dataset's options (composites: count, fixed frames)
    },
    "losses": {"focal_gamma": 2.0, "cb_beta": 0.9999},
    "inter_class": {"weight": 0.0, "margin": 1.0, "stages": [2]},  # RIM's ILM (the paper: weight 1, stage 2)
    "eval_every": 1,
    "keep_checkpoints": [],        # epochs whose checkpoint is also kept as checkpoint_epochNN.pt
    "log": {"tensorboard": True, "progress": True},
    "export": {"weights": "model.safetensors", "onnx": None,
               "input_size": None},  # the node's [height, width] (letterbox); None: input.crop_size
}


class RecipeError(UserError, ValueError):
    """A recipe file, key or value that the trainer cannot run; the message names the key (or file)."""


_OPEN = ("args", "options", "val_options", "loss_weights")


class _RecipeLoader(yaml.SafeLoader):
    """YAML as recipes mean it: ``5e-4`` and ``1e12`` are numbers (PyYAML's YAML 1.1 reads them as strings)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(text: str):
    """``text`` parsed as recipe YAML (numbers in scientific notation included)."""
    return yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: no Python objects


def read_recipe_file(path: str | Path) -> dict:
    """The YAML mapping of recipe file ``path``; RecipeError naming the file when it is missing, a folder, not
    YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        hint = f" (did you mean {path.with_suffix('.yaml')}?)" if path.with_suffix(".yaml").is_file() else ""
        raise RecipeError(f"{path}: recipe file {'is a folder' if path.is_dir() else 'not found'}{hint}")
    try:
        doc = read_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: not a YAML recipe ({flattened(error)})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of settings, not a {type(doc).__name__}")
    return doc


def merge(base: dict, override: dict, prefix: str = "") -> dict:
    """Recursive update; unknown keys are refused (named with their section: ``optim.lrr``) so that typos do
    not pass silently. ``prefix``: the section's dotted name."""
    out = copy.deepcopy(base)
    if not isinstance(override, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'the recipe'} must be a mapping of settings, not {override!r}")
    for key, value in override.items():
        if key not in out:
            raise RecipeError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(map(str, out)))})")
        if key in _OPEN and isinstance(value, dict):
            out[key] = {**out[key], **value}  # free-form: architecture / dataset arguments
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, f"{prefix}{key}.")
        elif isinstance(out[key], dict) and key not in _OPEN:
            raise RecipeError(f"{prefix}{key} is a section of settings ({', '.join(sorted(out[key]))}), "
                              f"not {value!r}")
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """DEFAULTS <- the YAML file <- ``overrides``; resolves ``{name}`` in output_dir; checked (``check_recipe``);
    the recipe as frozen sections (``Recipe``)."""
    config = copy.deepcopy(DEFAULTS)
    doc = read_recipe_file(path) if path is not None else {}
    config = merge(config, doc)
    if overrides:
        config = merge(config, overrides)
    config["output_dir"] = str(config["output_dir"]).format(name=config["name"])
    check_recipe(config)
    if _sets_stage1_epochs_only(config, (doc, overrides or {})):
        print(f"[config] note: {path or 'the recipe'} sets stage1.epochs for a multi-person run, which has no "
              f"stages: it trains {config['stage1']['epochs']} epochs; set multi_person.epochs instead", flush=True)
    return Recipe.from_dict(config)


def _sets_stage1_epochs_only(config: dict, docs: tuple[dict, ...]) -> bool:
    """Whether a multi-person recipe (its file or overrides: ``docs``) sets stage1.epochs, not multi_person.epochs."""
    from human_parsing_ros.models import is_multi_person

    if not is_multi_person(config["model"]["architecture"]) or config["multi_person"]["epochs"] is not None:
        return False
    return any(isinstance(doc.get("stage1"), dict) and "epochs" in doc["stage1"] for doc in docs)


# The values a choice setting may take (each refused in one line naming its key: ``check_choice``).
STAGE_LOSSES = ("ce", "focal", "class_balanced", "ce_lovasz")
PARSING_LOSSES = ("ce", "ce_lovasz")  # the losses self-correction refines: their CE becomes a soft-target KL
REDUCTIONS = ("kept_mean", "sum")
SCHEDULES = ("cosine", "poly", "step")
PRN_COUNTS = ("images", "pixels")
SAMPLINGS = ("pra", "prn", "none")
STAGE2_TRAINS = ("auto", "decoder", "classifier")
CPA_SOURCES = ("val", "train")
EVAL_LABELS = ("original", "resized")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """ValueError naming the config ``key`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise RecipeError(f"{key} '{value}' is not one of {', '.join(allowed)}")


def check_recipe(config: dict) -> None:
    """Refuse loss, sampling, schedule and evaluation settings that cannot work, before any time is spent
    training (stage 2's are otherwise used only after all of stage 1); each error is one line naming the key."""
    stage1, stage2 = config["stage1"], config["stage2"]
    check_choice("stage1.loss", stage1["loss"], STAGE_LOSSES)
    check_choice("stage2.loss", stage2["loss"], STAGE_LOSSES)
    if stage2["sampling"] != "none" and stage2["loss"] != "ce":
        raise RecipeError(f"stage2.loss '{stage2['loss']}' needs stage2.sampling: none (PRA/PRN sample for CE)")
    check_choice("stage2.reduction", stage2["reduction"], REDUCTIONS)
    check_choice("stage2.prn_counts", stage2["prn_counts"], PRN_COUNTS)
    check_choice("stage2.sampling", stage2["sampling"], SAMPLINGS)
    check_choice("stage2.trains", stage2["trains"], STAGE2_TRAINS)
    check_choice("stage1.cpa_source", stage1["cpa_source"], CPA_SOURCES)
    if stage2["sampling"] != "none":
        try:
            keep_probabilities(torch.ones(2), stage2["eta"], stage2["floor"])
        except ValueError as err:
            raise RecipeError(f"stage2 eta {stage2['eta']!r} / floor {stage2['floor']!r}: {err}") from None
    if stage2["sampling"] == "pra" and stage2["epochs"] and stage1["cpa_epoch"] < 1:
        raise RecipeError("stage2.sampling pra needs CPA: stage1.cpa_epoch must be 1 or more")
    if not isinstance(config["eval_every"], int) or config["eval_every"] < 1:
        raise RecipeError(f"eval_every must be a whole number of epochs, 1 or more, not {config['eval_every']!r} "
                         "(the last epoch is always evaluated)")
    optim = config["optim"]
    check_choice("optim.schedule", optim["schedule"], SCHEDULES)
    if optim["warmup_steps"] and optim["warmup_epochs"]:
        raise RecipeError("optim: set warmup_steps or warmup_epochs, not both")
    if not 0 <= optim["min_lr_factor"] < 1 or not 0 <= (optim["warmup_start"] or 0) <= 1:
        raise RecipeError(f"optim: min_lr_factor must be in [0, 1) and warmup_start in [0, 1], not "
                         f"{optim['min_lr_factor']} and {optim['warmup_start']}")
    check_choice("input.eval_labels", config["input"]["eval_labels"], EVAL_LABELS)
    check_self_correction(config)


def check_self_correction(config: dict) -> None:
    """Self-correction needs a whole number of cycles, a main schedule that ends and a CE loss to refine."""
    spec, stage1 = config["self_correction"], config["stage1"]
    cycles, cycle_epochs = int(spec["cycles"]), int(spec["cycle_epochs"])
    if cycles < 0 or cycle_epochs < 1:
        raise RecipeError(f"self_correction: cycles must be >= 0 and cycle_epochs >= 1, not "
                         f"CyclePlan(main={stage1['epochs']}, cycles={cycles}, cycle_epochs={cycle_epochs})")
    if cycles:
        if stage1["schedule_epochs"] not in (None, stage1["epochs"]):
            raise RecipeError("self_correction needs stage 1's main schedule to end: stage1.schedule_epochs must be "
                             "unset or equal stage1.epochs")
        if stage1["loss"] not in PARSING_LOSSES:
            raise RecipeError(f"self_correction refines the cross-entropy: stage1.loss must be one of "
                             f"{', '.join(PARSING_LOSSES)}, not '{stage1['loss']}'")


def parse_overrides(items: list[str]) -> dict:
    """``a.b=value`` command-line overrides (values parsed as YAML) into a nested dict."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"override '{item}' is not key=value")
        key, text = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = read_yaml(text)
    return out


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``config`` with nested keys joined by dots (``optim.lr``); lists and other values stay whole, empty
    sections add nothing."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def recipe_changes(saved: dict, config: dict | Recipe, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key old -> new`` for every setting in which ``config`` differs from ``saved`` (a checkpoint's recipe),
    apart from the keys in ``ignore`` and below them. A setting newer than ``saved`` counts as its default
    there (what the run trained with)."""
    plain = config.to_dict() if isinstance(config, Recipe) else config
    before, after = {**flatten(DEFAULTS), **flatten(saved)}, flatten(plain)
    missing = "(unset)"
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if any(key == skip or key.startswith(skip + ".") for skip in ignore):
            continue
        old, new = before.get(key, missing), after.get(key, missing)
        if old != new:
            changes.append(f"{key} {old} -> {new}")
    return changes


def recipe_of(config: dict[str, Any] | Recipe) -> Recipe:
    """A ``Recipe`` from a merged recipe dict (``protocol.row_config``), checked; a Recipe as it is."""
    if isinstance(config, Recipe):
        return config
    check_recipe(config)
    return Recipe.from_dict(config)


def saved_recipe(saved: dict[str, Any]) -> Recipe:
    """The recipe a checkpoint stored (plain data): settings newer than it take their defaults, settings it has
    that no longer exist are left out, so that an older checkpoint still loads."""
    return Recipe.from_dict(_over_defaults(DEFAULTS, saved))


def _over_defaults(base: dict, saved: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in saved.items():
        if key not in out:
            continue
        if isinstance(out[key], dict) and isinstance(value, dict) and key not in _OPEN:
            out[key] = _over_defaults(out[key], value)
        else:
            out[key] = value
    return out
