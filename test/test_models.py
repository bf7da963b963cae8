"""Every registered architecture goes through the shared model tester (test/model_tester.py)."""
import model_tester
import pytest
import torch

from human_parsing_ros.models import (
    ARCHITECTURES,
    SegmentationModel,
    ServableModel,
    build_model,
    is_multi_person,
    semantic_architectures,
)

ARGS = {"num_classes": 20, "encoder_weights": None}
NAMES = semantic_architectures()  # RP R-CNN (multi-person) has its own tests: test_rprcnn.py
# Per-architecture arguments that keep the CPU tests fast (same code paths, fewer channels).
SMALL: dict[str, dict] = {"ce2p": {"encoder": "mobilenet_v2"},       # SCHP's ResNet-101: test_schp_import.py
                          "cdlinknet": {"encoder": "mobilenet_v2"}}  # the paper's ResNet-101: test_zoo_resnet.py


def args_for(name: str) -> dict:
    return {**ARGS, **SMALL.get(name, {})}


def test_registry_is_not_empty():
    assert NAMES, "no architecture registered"


def test_the_kind_of_an_architecture_is_its_class_attribute():
    """Every architecture says its kind in ``multi_person`` (the ServableModel protocol); no one guesses it."""
    for name, cls in ARCHITECTURES.items():
        assert type(cls.multi_person) is bool, name
        assert is_multi_person(name) is cls.multi_person
        assert cls.multi_person is not issubclass(cls, SegmentationModel), name  # single-map parsers are these
    assert sorted(name for name, cls in ARCHITECTURES.items() if issubclass(cls, SegmentationModel)) == NAMES
    assert is_multi_person("rp_rcnn") and not is_multi_person("deeplabv3plus") and not is_multi_person("no_such")


@pytest.mark.parametrize("name", NAMES)
def test_every_single_map_architecture_is_servable(name):
    model = build_model(name, **args_for(name))
    assert isinstance(model, ServableModel) and not model.multi_person and model.num_classes == 20
    assert "deeplabv3plus" in ARCHITECTURES  # the default weights' architecture


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model_tester.check_forward_backward(name, args_for(name), sizes=[(64, 48), (65, 47), (33, 71)])


@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip(name, tmp_path):
    model_tester.check_weights_round_trip(name, args_for(name), tmp_path)


@pytest.mark.parametrize("mode", [None, "decoder", "classifier"])
@pytest.mark.parametrize("name", NAMES)
def test_encoder_freeze(name, mode):
    model_tester.check_encoder_freeze(name, args_for(name), mode=mode)


@pytest.mark.parametrize("name", NAMES)
def test_stage2_mode_rejects_unknown(name):
    model = build_model(name, **ARGS)
    with pytest.raises(ValueError, match="everything"):
        model.stage2_modules("everything")


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_follows_argument(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, encoder_weights=None).eval()
    assert model.num_classes == 7
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 48)).shape == (1, 7, 64, 48)


def test_build_model_unknown_name():
    with pytest.raises(ValueError) as info:
        build_model("no_such_net_xyz", num_classes=20)
    message = str(info.value)
    assert "no_such_net_xyz" in message
    for name in NAMES:  # says what is known
        assert name in message


@pytest.mark.parametrize("name", NAMES)
def test_build_model_bad_argument(name):
    with pytest.raises(ValueError) as info:
        build_model(name, num_classes=20, no_such_argument=3)
    assert name in str(info.value) and "no_such_argument" in str(info.value)


def test_build_model_unknown_encoder_is_a_user_error():
    from human_parsing_ros.errors import UserError

    with pytest.raises(ValueError, match="not_an_encoder") as info:
        build_model("deeplabv3plus", num_classes=20, encoder="not_an_encoder")
    assert isinstance(info.value, UserError)  # a command-line tool prints it as one line


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches(name, tmp_path):
    pytest.importorskip("onnxruntime")
    model_tester.check_onnx_export(name, args_for(name), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_model_file_export_round_trips(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model_tester.check_model_file_export(name, args_for(name), tmp_path)


# Variants beyond the defaults that the registry sweep above does not build.
VARIANT_ARGS = [("deeplabv3plus", {"encoder": "resnet50", "decoder_channels": 64, "aux": True}),
                ("pspnet", {"aux": True}), ("stdc", {"variant": "stdc2", "aux": True}),
                ("ddrnet", {"variant": "23", "aux": True})]


@pytest.mark.parametrize("name,extra", VARIANT_ARGS, ids=[f"{n}-{'-'.join(map(str, e.values()))}"
                                                          for n, e in VARIANT_ARGS])
def test_variants_forward_backward_and_freeze(name, extra):
    args = {**args_for(name), **extra}
    model_tester.check_forward_backward(name, args, sizes=[(65, 47)])
    model_tester.check_encoder_freeze(name, args)


@pytest.mark.parametrize("name", NAMES)
def test_one_forward_and_aux_protocol(name):
    """The base class owns ``forward``; aux heads are declared once, each with the feature it reads."""
    cls = ARCHITECTURES[name]
    assert cls.forward is SegmentationModel.forward and cls.forward_lowres is SegmentationModel.forward_lowres
    model = build_model(name, **args_for(name))
    assert not [attr for attr in dir(model.encoder) if attr.startswith("forward_with")]
    assert len(model.aux_heads) == len(model.aux_features) == len(model.aux_weights)


# Architectures whose aux-head keys were renamed when they moved to ``aux_heads``.
OLD_AUX_KEYS = [("deeplabv3plus", {"aux": True}, "aux_head.4.bias"), ("pspnet", {"aux": True}, "aux_head.1.weight"),
                ("danet", {"aux": True}, "aux_head.0.weight"),
                ("ddrnet", {"aux": True}, "aux_head.1.weight")]


@pytest.mark.parametrize("name,extra,old_key", OLD_AUX_KEYS, ids=[n for n, _, _ in OLD_AUX_KEYS])
def test_state_dict_with_old_aux_key_names_loads(name, extra, old_key):
    torch.manual_seed(0)
    model = build_model(name, **args_for(name), **extra)
    current = model.state_dict()
    old_names = {}
    for key, value in current.items():
        for old, new in model.legacy_aux_keys.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        old_names[key] = value
    assert old_key in old_names
    torch.manual_seed(1)
    other = build_model(name, **args_for(name), **extra)
    other.load_state_dict(old_names)  # strict: every old name must be renamed
    assert all(torch.equal(value, other.state_dict()[key]) for key, value in current.items())
