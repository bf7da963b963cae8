"""The weights contract: safetensors + metadata, and one clear error line for every unusable file."""
import json
import os
import pickle
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from human_parsing_ros.class_sets import get_class_set
from human_parsing_ros.models import build_model
from human_parsing_ros.tools.random_weights import DEFAULT_ARCHITECTURE, make_random_weights
from human_parsing_ros.weights import (
    FORMAT,
    FORMAT_VERSION,
    WeightsError,
    WeightsInfo,
    check_input_size,
    load_weights,
    read_weights_info,
    save_weights,
)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return make_random_weights(tmp_path_factory.mktemp("weights") / "w.safetensors", class_set="lip",
                               input_size=(96, 80))


def _read(path):
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        # a safetensors handle, not a dict: keys() is its API
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())  # noqa: SIM118


def _rewrite(src, dst, edit_metadata=None, edit_tensors=None):
    tensors, metadata = _read(src)
    if edit_metadata:
        edit_metadata(metadata)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def _refused(path, *reason_words):
    """load_weights refuses ``path`` with one line naming the file and containing every reason word."""
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, f"multi-line error: {message!r}"
    assert str(path) in message, f"error does not name the file: {message}"
    for word in reason_words:
        assert word.lower() in message.lower(), f"error lacks {word!r}: {message}"
    return message


# ---------------------------------------------------------------- round trip

def test_metadata_round_trip(tmp_path):
    torch.manual_seed(0)
    args = {"num_classes": 18, "encoder": "mobilenet_v2", "output_stride": 16, "decoder_channels": 32}
    model = build_model(DEFAULT_ARCHITECTURE, **args)
    recipe = {"dataset": "atr-fixture", "stages": [{"epochs": 70}, {"epochs": 30, "frozen": "encoder"}],
              "sampling": {"method": "PRA", "eta": "min"}, "metrics": {"mIoU": 0.5}}
    info = WeightsInfo.for_class_set(DEFAULT_ARCHITECTURE, args, get_class_set("atr"), (128, 96), recipe)
    info.mean, info.std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = save_weights(tmp_path / "sub" / "atr.safetensors", model, info)

    for loaded in (read_weights_info(path), load_weights(path)[1]):
        assert loaded.architecture == DEFAULT_ARCHITECTURE
        assert loaded.architecture_args == args
        assert loaded.class_set_name == "atr"
        assert loaded.class_names == list(get_class_set("atr").names)
        assert sorted(map(tuple, loaded.flip_pairs)) == sorted(get_class_set("atr").flip_pairs)
        assert loaded.palette == get_class_set("atr").palette.tolist()
        assert tuple(loaded.input_size) == (128, 96)
        assert tuple(loaded.mean) == (0.5, 0.4, 0.3) and tuple(loaded.std) == (0.2, 0.25, 0.3)
        assert loaded.recipe == recipe
        assert not loaded.untrained
        assert loaded == info
        cs = loaded.class_set()
        assert cs.names == get_class_set("atr").names
        assert cs.flip_permutation() == get_class_set("atr").flip_permutation()
        assert (cs.palette == get_class_set("atr").palette).all()

    _, metadata = _read(path)
    assert json.loads(metadata["format"]) == FORMAT
    assert json.loads(metadata["format_version"]) == FORMAT_VERSION


def test_random_weights_are_marked_untrained(weights_file):
    model, info = load_weights(weights_file)
    assert info.untrained and info.recipe["untrained"] is True
    assert tuple(info.input_size) == (96, 80)
    assert model.num_classes == 20 == len(info.class_names)
    assert not model.training


def test_saved_file_is_readable_like_any_other_file(tmp_path, weights_file):
    """The atomic write must not leave a private (0600) file that a node under another user cannot read."""
    model, info = load_weights(weights_file)
    path = save_weights(tmp_path / "m.safetensors", model, info)
    reference = tmp_path / "plain"
    reference.write_bytes(b"x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_overwrite_replaces_file(tmp_path, weights_file):
    model, info = load_weights(weights_file)
    path = save_weights(tmp_path / "m.safetensors", model, info)
    with torch.no_grad():
        model.segmentation_head.bias.add_(1.0)
    save_weights(path, model, info)
    reloaded, _ = load_weights(path)
    assert torch.equal(reloaded.segmentation_head.bias, model.segmentation_head.bias)


def test_save_refuses_class_count_mismatch(tmp_path, weights_file):
    model, _ = load_weights(weights_file)
    info = WeightsInfo.for_class_set(DEFAULT_ARCHITECTURE, {"num_classes": 20}, get_class_set("atr"), (96, 96))
    with pytest.raises(WeightsError, match="20 outputs"):
        save_weights(tmp_path / "x.safetensors", model, info)
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------- refusals

def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.safetensors", "no such")


def test_directory_is_reported_as_a_directory(tmp_path):
    """A directory passed as weights is said to be one, not "no such weights file"."""
    message = _refused(tmp_path, "is a directory")
    assert "no such" not in message
    with pytest.raises(WeightsError) as info:
        read_weights_info(tmp_path)
    assert "is a directory" in str(info.value) and str(tmp_path) in str(info.value)


def test_resolve_weights_path_refuses_a_directory(tmp_path):
    from human_parsing_ros.resources import resolve_weights_path

    with pytest.raises(WeightsError) as info:
        resolve_weights_path(str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "is a directory" in message
    assert resolve_weights_path(str(tmp_path / "w.safetensors")) == tmp_path / "w.safetensors"


def test_truncated_file(tmp_path, weights_file):
    data = weights_file.read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "safetensors")
    # Cut inside the header too.
    path.write_bytes(data[:100])
    _refused(path, "safetensors")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _refused(path, "safetensors")


def test_corrupt_bytes(tmp_path, weights_file):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(os.urandom(4096))
    _refused(path, "safetensors")
    data = bytearray(weights_file.read_bytes())
    data[16:48] = b"\xff" * 32  # inside the JSON header
    path.write_bytes(bytes(data))
    _refused(path, "safetensors")


class _Tripwire:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.safetensors"
    torch.save({"segmentation_head.weight": torch.zeros(20, 128, 1, 1), "trap": _Tripwire(marker)}, path)
    _refused(path, "safetensors")
    with pytest.raises(WeightsError):
        read_weights_info(path)
    assert not marker.exists(), "the pickle was executed"
    # Control: the file really is a live pickle (loading it the unsafe way trips the wire).
    # (A file object: torch.load would hand a *.safetensors path to safetensors instead.)
    with open(path, "rb") as handle:
        torch.load(handle, weights_only=False)
    assert marker.exists()

    plain = tmp_path / "plain.pkl"
    marker.unlink()
    plain.write_bytes(pickle.dumps(_Tripwire(marker)))
    _refused(plain, "safetensors")
    assert not marker.exists()


def test_safetensors_without_our_metadata(tmp_path, weights_file):
    tensors, _ = _read(weights_file)
    path = tmp_path / "foreign.safetensors"
    save_file(tensors, str(path))
    _refused(path, "metadata")
    save_file(tensors, str(path), metadata={"framework": "pt"})
    _refused(path, "metadata")


def test_wrong_format_name_and_version(tmp_path, weights_file):
    path = _rewrite(weights_file, tmp_path / "fmt.safetensors",
                    lambda m: m.update(format=json.dumps("someone.else")))
    _refused(path, "someone.else")
    path = _rewrite(weights_file, tmp_path / "ver.safetensors",
                    lambda m: m.update(format_version=json.dumps(FORMAT_VERSION + 1)))
    _refused(path, "version", str(FORMAT_VERSION + 1))


def test_metadata_not_json(tmp_path, weights_file):
    path = _rewrite(weights_file, tmp_path / "json.safetensors", lambda m: m.update(palette="[[0, 0"))
    _refused(path, "json")


BAD_INPUT_SIZES = ([8, 96], [96, 5000], [96], [96, 96, 3], [96.5, 96], [True, 96], "96", 96, [-96, 96])


@pytest.mark.parametrize("size", BAD_INPUT_SIZES)
def test_check_input_size_refuses(size):
    reason = check_input_size(size)
    assert reason and "\n" not in reason and "input_size" in reason and "16..4096" in reason


@pytest.mark.parametrize("size", [[16, 16], (96, 80), [4096, 4096], (torch.tensor(96).item(), 64)])
def test_check_input_size_accepts(size):
    assert check_input_size(size) is None


def test_metadata_input_size_checked_by_the_same_rule(tmp_path, weights_file):
    path = _rewrite(weights_file, tmp_path / "size.safetensors", lambda m: m.update(input_size="[8, 96]"))
    message = _refused(path, "input_size")
    assert message.endswith(check_input_size([8, 96]))


@pytest.mark.parametrize("key, value, words", [
    ("palette", lambda p: [[300, 0, 0], *p[1:]], ["palette", "0..255"]),
    ("palette", lambda p: [[-1, 0, 0], *p[1:]], ["palette", "0..255"]),
    ("std", lambda s: [0, 0, 0], ["std", "above 0"]),
    ("mean", lambda m: [0.5], ["mean", "three finite numbers"]),
    ("std", lambda s: [float("nan"), 1, 1], ["three finite numbers"]),
    ("flip_pairs", lambda f: [[14, 15], [15, 16]], ["flip pair (15, 16)", "already paired"]),
    ("flip_pairs", lambda f: [[14, 14]], ["flip pair (14, 14)", "itself"]),
], ids=["palette_300", "palette_negative", "std_zero", "mean_short", "std_nan", "pairs_overlap", "pair_self"])
def test_metadata_that_would_parse_wrongly_is_refused_in_one_line(tmp_path, weights_file, key, value, words):
    """Values that would load and then give NaN inputs, every frame failing, or a flip TTA that drops a class."""
    def edit(metadata):
        metadata[key] = json.dumps(value(json.loads(metadata[key])))

    _refused(_rewrite(weights_file, tmp_path / f"{key}.safetensors", edit), *words)


def test_metadata_missing_key(tmp_path, weights_file):
    path = _rewrite(weights_file, tmp_path / "key.safetensors", lambda m: m.pop("class_names"))
    _refused(path, "class_names")


def test_class_names_edited_to_another_length(tmp_path, weights_file):
    def shorten(m):
        m["class_names"] = json.dumps(json.loads(m["class_names"])[:18])

    _refused(_rewrite(weights_file, tmp_path / "names.safetensors", shorten), "18 classes")


def test_class_count_mismatch(tmp_path, weights_file):
    """A self-consistent class list of another length than the network's outputs."""
    def grow(m):
        names = json.loads(m["class_names"]) + [f"extra-{i}" for i in range(4)]
        palette = json.loads(m["palette"]) + [[1, 2, i] for i in range(4)]
        m["class_names"], m["palette"] = json.dumps(names), json.dumps(palette)

    message = _refused(_rewrite(weights_file, tmp_path / "count.safetensors", grow), "class count")
    assert "20" in message and "24" in message


def test_unknown_architecture(tmp_path, weights_file):
    path = _rewrite(weights_file, tmp_path / "arch.safetensors",
                    lambda m: m.update(architecture=json.dumps("hrnet_w99")))
    _refused(path, "hrnet_w99", "architecture")


def test_bad_architecture_arguments(tmp_path, weights_file):
    def edit(m):
        args = json.loads(m["architecture_args"])
        args["wings"] = 2
        m["architecture_args"] = json.dumps(args)

    _refused(_rewrite(weights_file, tmp_path / "args.safetensors", edit), "wings")


def test_tensor_shape_mismatch(tmp_path, weights_file):
    def edit(tensors):
        tensors["segmentation_head.weight"] = torch.zeros(20, 64, 1, 1)

    message = _refused(_rewrite(weights_file, tmp_path / "shape.safetensors", edit_tensors=edit),
                       "segmentation_head.weight", "shape")
    assert "64" in message and "128" in message


def test_tensor_missing_and_unexpected(tmp_path, weights_file):
    key = "segmentation_head.bias"
    _refused(_rewrite(weights_file, tmp_path / "missing.safetensors", edit_tensors=lambda t: t.pop(key)),
             "missing", key)
    _refused(_rewrite(weights_file, tmp_path / "extra.safetensors",
                      edit_tensors=lambda t: t.update({"extra.weight": torch.zeros(2)})),
             "unexpected", "extra.weight")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensor_is_refused(tmp_path, weights_file, value):
    """One NaN/Inf anywhere (here a BatchNorm statistic) would silently label everything background."""
    key = "encoder.stages.0.0.1.running_var"

    def edit(tensors):
        assert key in tensors
        tensors[key] = tensors[key].clone()
        tensors[key][3] = value

    message = _refused(_rewrite(weights_file, tmp_path / "nan.safetensors", edit_tensors=edit),
                       "non-finite", key)
    assert ("1 NaN" if value != value else "1 Inf") in message


def test_all_nan_file_is_refused(tmp_path, weights_file):
    def edit(tensors):
        for key, tensor in tensors.items():
            if tensor.is_floating_point():
                tensors[key] = torch.full_like(tensor, float("nan"))

    _refused(_rewrite(weights_file, tmp_path / "allnan.safetensors", edit_tensors=edit), "non-finite", "NaN")


def test_save_refuses_non_finite_model(tmp_path, weights_file):
    model, info = load_weights(weights_file)
    with torch.no_grad():
        model.segmentation_head.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(WeightsError) as err:
        save_weights(tmp_path / "x.safetensors", model, info)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "x.safetensors") in message
    assert "segmentation_head.weight" in message and "non-finite" in message
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_untouched_rewrite_still_loads(tmp_path, weights_file):
    """Control for the refusals above: the rewrite helper itself produces a loadable file."""
    path = _rewrite(weights_file, tmp_path / "same.safetensors")
    model, info = load_weights(path)
    reference, _ = load_weights(weights_file)
    assert info == read_weights_info(weights_file)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_an_aux_trained_file_with_the_old_aux_key_names_still_loads(tmp_path):
    """Files written before the zoo had one ``aux_heads`` attribute name DeepLabv3+'s head ``aux_head.*``."""
    torch.manual_seed(0)
    args = {"num_classes": 20, "encoder": "mobilenet_v2", "aux": True}
    model = build_model("deeplabv3plus", **args)
    info = WeightsInfo.for_class_set("deeplabv3plus", args, get_class_set("lip"), (64, 64), {})
    current = save_weights(tmp_path / "current.safetensors", model, info)
    renamed = {new: old for old, new in model.legacy_aux_keys.items()}

    def to_old_names(tensors):
        for key in [k for k in tensors if k.startswith("aux_heads.")]:
            new = next(n for n in renamed if key.startswith(n))
            tensors[renamed[new] + key[len(new):]] = tensors.pop(key)

    old = _rewrite(current, tmp_path / "old.safetensors", edit_tensors=to_old_names)
    assert any(k.startswith("aux_head.") for k in _read(old)[0])
    loaded, _ = load_weights(old)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, expected_aux = model.eval()(x, with_aux=True)
        logits, aux = loaded(x, with_aux=True)
    assert torch.equal(logits, expected) and torch.equal(aux[0], expected_aux[0])


# ---------------------------------------------------------------- architecture arguments the constructor chokes on
def _with_args(src, dst, **changes):
    def edit(m):
        m["architecture_args"] = json.dumps({**json.loads(m["architecture_args"]), **changes})

    return _rewrite(src, dst, edit)


@pytest.mark.parametrize("value", [-1, 10 ** 9, 1e9], ids=["negative", "huge", "float"])
def test_an_absurd_size_in_the_default_file_is_refused_in_one_line_naming_it(tmp_path, value):
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    path = _with_args(DEFAULT_WEIGHTS, tmp_path / "absurd.safetensors", decoder_channels=value)
    _refused(path, "decoder_channels", repr(value))
    with pytest.raises(WeightsError, match="decoder_channels"):
        HumanParser(path, device="cpu")


def test_a_list_the_multi_person_constructor_cannot_index_is_refused_naming_it(tmp_path):
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import PERSONS_WEIGHTS

    path = _with_args(PERSONS_WEIGHTS, tmp_path / "proposals.safetensors", proposals=[10])
    message = _refused(path, "proposals=[10]", "IndexError")  # an IndexError inside the constructor
    assert "channels" not in message  # only the argument to blame, not every argument
    with pytest.raises(WeightsError, match=r"proposals=\[10\]"):
        HumanParser(path, device="cpu")


def test_any_exception_of_a_constructor_memory_error_included_becomes_one_weights_error(tmp_path, weights_file,
                                                                                      monkeypatch):
    from human_parsing_ros.models import ARCHITECTURES

    real = ARCHITECTURES[DEFAULT_ARCHITECTURE]

    class Greedy(real):
        def __init__(self, *args, head_channels=None, **kwargs):
            if head_channels is not None:
                raise MemoryError(f"cannot allocate {head_channels} x {head_channels} channels")
            super().__init__(*args, **kwargs)

    monkeypatch.setitem(ARCHITECTURES, DEFAULT_ARCHITECTURE, Greedy)
    message = _refused(_with_args(weights_file, tmp_path / "greedy.safetensors", head_channels=4096),
                       "head_channels=4096", "MemoryError")
    assert message.count(str(tmp_path)) == 1
