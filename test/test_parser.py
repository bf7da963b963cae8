"""HumanParser end to end on a bundled photo, with an untrained network (CPU, small input)."""
import numpy as np
import pytest
import torch
from PIL import Image

from human_parsing_ros.parse_options import ParseOptions
from human_parsing_ros.parser import HumanParser, resolve_device, resolve_precision
from human_parsing_ros.presence import Part
from human_parsing_ros.render import resize_nearest
from human_parsing_ros.samples import load_rgb, sample_photos
from human_parsing_ros.tools.random_weights import make_random_weights
from human_parsing_ros.weights import check_input_size, load_weights, save_weights

NET = (96, 96)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return make_random_weights(tmp_path_factory.mktemp("parser") / "w.safetensors", class_set="lip",
                               input_size=NET)


@pytest.fixture(scope="module")
def weights(random_weights, tmp_path_factory):
    """The random network with its classifier bias zeroed.

    At random initialisation the head's bias outweighs the features and every pixel gets the same
    class, which would make the label-map checks below vacuous; without the bias the labels follow
    the image. Still written and read through the real weights format.
    """
    model, info = load_weights(random_weights)
    with torch.no_grad():
        model.segmentation_head.bias.zero_()
    return save_weights(tmp_path_factory.mktemp("parser") / "w0.safetensors", model, info)


@pytest.fixture(scope="module")
def photo():
    photos = sample_photos()
    assert photos, "no bundled sample photos"
    return load_rgb(photos[0])


@pytest.fixture(scope="module")
def square(photo):
    """The photo resized to exactly the network input (so stretch is the identity)."""
    return np.asarray(Image.fromarray(photo).resize(NET[::-1], Image.BILINEAR))


@pytest.fixture(scope="module")
def parser(weights):
    return HumanParser(weights, device="cpu", flip_tta=True)


def test_labels_at_input_resolution(parser, photo):
    result = parser.parse(photo)
    assert result.labels.shape == photo.shape[:2]
    assert result.labels.dtype == np.uint8
    assert result.labels.max() < parser.num_classes == 20
    assert len(np.unique(result.labels)) > 1, "the label map should depend on the image"
    assert set(result.timings_ms) == {"preprocess", "forward", "labels"}  # statistics: on first use
    first = result.statistics
    assert result.statistics is first and set(result.timings_ms) == {"preprocess", "forward", "labels", "statistics"}
    assert int(first.pixel_counts.sum()) == result.labels.size
    assert all(v >= 0 for v in result.timings_ms.values())


def test_map_persons_confidence_is_computed_on_first_use_and_sums_the_statistics(photo):
    """Map persons: the per-person confidence sums wait for their first reader (the node asks only for a
    ``persons`` subscriber); added over persons and nobody, they are the frame's per-class confidence sums."""
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    result = HumanParser(DEFAULT_WEIGHTS, device="cpu").parse(photo, map_persons=True)
    assert result.persons and "statistics" not in result.timings_ms
    sums = result.person_confidence_sums
    assert result.compute_person_confidence is None and "statistics" in result.timings_ms
    assert result.person_confidence_sums is sums and sums.shape == (len(result.persons) + 1, 11)
    np.testing.assert_allclose(sums.sum(0), result.statistics.confidence_sums.numpy(), rtol=1e-4, atol=1e-2)


def test_untouched_random_weights_parse(random_weights, photo):
    result = HumanParser(random_weights, device="cpu").parse(photo)
    assert result.labels.shape == photo.shape[:2] and result.labels.max() < 20


def test_network_resolution_is_the_letterboxed_size(parser, photo):
    h, w = photo.shape[:2]
    scale = min(NET[0] / h, NET[1] / w)
    expected = (round(h * scale), round(w * scale))
    assert max(expected) == 96 and min(expected) < 96  # the sample photo is portrait
    result = parser.parse(photo, output_resolution="network")
    assert result.labels.shape == expected
    with pytest.raises(ValueError, match="sideways"):
        parser.parse(photo, output_resolution="sideways")


def test_bad_images_refused(parser, photo):
    for bad in (photo[..., 0], photo.astype(np.float32), photo[..., :2], np.dstack([photo, photo[..., :1]]),
                photo[:0], photo[:, :0]):  # and no pixel at all
        with pytest.raises(ValueError, match="uint8 RGB"):
            parser.parse(bad)


def test_presence_and_statistics(parser, photo):
    result = parser.parse(photo)
    labels = result.labels
    threshold = 0.01
    parts = result.presence(threshold)
    assert all(type(part) is Part for part in parts)  # the core's type, rounded and sent as is by messages
    assert [p.id for p in parts] == list(range(20))
    assert [p.name for p in parts] == list(parser.class_set.names)
    assert sum(p.pixel_fraction for p in parts) == pytest.approx(1.0, abs=1e-9)
    assert any(p.present for p in parts)
    for part in parts:
        where = labels == part.id
        count = int(where.sum())
        assert part.pixel_fraction == count / labels.size  # full precision; rounding is for the wire
        assert part.present == (count > 0 and part.pixel_fraction >= threshold)
        assert int(result.statistics.pixel_counts[part.id]) == count
        if count == 0:
            assert part.bbox is None and part.mean_confidence == 0.0
            continue
        ys, xs = np.nonzero(where)
        assert part.bbox_full == (xs.min(), ys.min(), xs.max(), ys.max())
        x0, y0, x1, y1 = part.bbox_full
        inside = where[y0:y1 + 1, x0:x1 + 1]
        assert inside.sum() == count and inside[0].any() and inside[-1].any() and inside[:, 0].any()
        k = count // 100  # the robust box: the (k+1)-th smallest and largest x and y of the part's pixels
        xs, ys = np.sort(xs), np.sort(ys)
        assert part.bbox == (xs[k], ys[k], xs[count - 1 - k], ys[count - 1 - k])
        assert 1.0 / 20 - 1e-6 <= part.mean_confidence <= 1.0


def test_masks(parser, photo):
    result = parser.parse(photo)
    for class_id in np.unique(result.labels).tolist() + [19]:
        mask = result.mask(class_id)
        assert mask.dtype == np.uint8 and mask.shape == result.labels.shape
        assert set(np.unique(mask).tolist()) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, result.labels == class_id)


def _mirror_agreement(parser, image):
    perm = np.asarray(parser.class_set.flip_permutation(), dtype=np.uint8)
    labels = parser.parse(image).labels
    mirrored = parser.parse(np.ascontiguousarray(image[:, ::-1])).labels
    expected_swapped = perm[labels[:, ::-1]]
    expected_plain = labels[:, ::-1]
    return (mirrored == expected_swapped).mean(), (mirrored == expected_plain).mean(), labels


def test_flip_tta_is_equivariant_with_left_right_swap(weights, square):
    with_tta = HumanParser(weights, device="cpu", resize_mode="stretch", flip_tta=True)
    assert with_tta.network_hw == NET
    swapped, plain, labels = _mirror_agreement(with_tta, square)
    assert swapped >= 0.995
    # The swap is really applied: left/right classes are on screen, and an unswapped mirror disagrees.
    pairs = {c for pair in with_tta.class_set.flip_pairs for c in pair}
    assert np.isin(labels, list(pairs)).mean() > 0.05
    assert plain < swapped - 0.05

    without = HumanParser(weights, device="cpu", resize_mode="stretch", flip_tta=False)
    swapped_without, _, _ = _mirror_agreement(without, square)
    assert swapped_without < swapped - 0.05, "without TTA an untrained network is not mirror-equivariant"


def test_per_call_options_equal_constructor_options(weights, photo):
    plain = HumanParser(weights, device="cpu")
    for options in ({"flip_tta": True}, {"resize_mode": "stretch"}, {"flip_tta": True, "resize_mode": "stretch"}):
        built = HumanParser(weights, device="cpu", **options).parse(photo)
        per_call = plain.parse(photo, **options)
        np.testing.assert_array_equal(per_call.labels, built.labels)
        torch.testing.assert_close(per_call.statistics.confidence_sums, built.statistics.confidence_sums)
        whole = plain.parse(photo, ParseOptions(**options))  # a ParseOptions says the same
        np.testing.assert_array_equal(whole.labels, built.labels)
    # A per-call choice is for that call only; no options means the constructor's.
    assert plain.options == ParseOptions(person_threshold=0.5)  # no min_score in the file: 0.5
    assert (plain.resize_mode, plain.flip_tta) == ("letterbox", False)
    with_tta = HumanParser(weights, device="cpu", flip_tta=True)
    assert with_tta.options.flip_tta
    np.testing.assert_array_equal(with_tta.parse(photo, flip_tta=False).labels, plain.parse(photo).labels)
    np.testing.assert_array_equal(with_tta.parse(photo, ParseOptions()).labels, plain.parse(photo).labels)
    np.testing.assert_array_equal(with_tta.parse(photo, with_tta.options).labels, with_tta.parse(photo).labels)
    # option fields replace fields of the options given, not of the parser's
    stretched = ParseOptions(resize_mode="stretch")
    built = HumanParser(weights, device="cpu", options=stretched, flip_tta=True)
    assert built.options == ParseOptions(resize_mode="stretch", flip_tta=True, person_threshold=0.5)
    np.testing.assert_array_equal(with_tta.parse(photo, stretched, flip_tta=True).labels, built.parse(photo).labels)


def test_per_call_options_are_validated(parser, photo):
    with pytest.raises(ValueError, match="'squash'"):
        parser.parse(photo, resize_mode="squash")
    with pytest.raises(ValueError, match="flip_tta"):
        parser.parse(photo, flip_tta="yes")
    with pytest.raises(ValueError, match="flip_tta"):
        parser.forward(torch.zeros(1, 3, *NET), flip_tta=1)
    with pytest.raises(TypeError, match="options must be a ParseOptions, not str 'network'"):
        parser.parse(photo, "network")  # the old positional output_resolution
    with pytest.raises(TypeError, match="unknown parse option 'squash'"):
        parser.parse(photo, squash=True)
    with pytest.raises(TypeError, match="ParseOptions, not dict"):
        HumanParser.from_model(*load_weights(parser.weights_path), device="cpu", options={"flip_tta": True})
    for name in ("options", "resize_mode", "flip_tta", "person_threshold", "max_persons"):
        with pytest.raises(AttributeError):
            setattr(parser, name, getattr(parser, name))  # options travel with the call, not by assignment
    assert parser.resize_mode == "letterbox"


def test_flip_tta_logits_are_symmetric(weights, square):
    """Below the labels: the TTA logits of a mirrored input are the mirrored, swapped TTA logits."""
    p = HumanParser(weights, device="cpu", resize_mode="stretch", flip_tta=True)
    mean, std = torch.tensor(p.info.mean).view(1, 3, 1, 1), torch.tensor(p.info.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(square.copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    a, b = p.forward(x), p.forward(x.flip(-1))
    perm = torch.tensor(p.class_set.flip_permutation())
    torch.testing.assert_close(b, a.flip(-1).index_select(0, perm), atol=1e-4, rtol=1e-4)


def test_input_size_override_and_resize_mode(weights, photo):
    p = HumanParser(weights, device="cpu", input_size=(64, 48), resize_mode="stretch")
    assert p.network_hw == (64, 48)
    assert p.parse(photo, output_resolution="network").labels.shape == (64, 48)
    assert p.parse(photo).labels.shape == photo.shape[:2]
    assert "64x48" in p.describe() and "stretch" in p.describe()
    assert "flip TTA on" in p.describe(ParseOptions(flip_tta=True)) and "letterbox" in p.describe(ParseOptions())
    with pytest.raises(ValueError, match="zoom"):
        HumanParser(weights, device="cpu", resize_mode="zoom")
    for bad in ((8, 96), (96, 5000), (96,), (96.0, 96)):
        with pytest.raises(ValueError) as info:
            HumanParser(weights, device="cpu", input_size=bad)
        assert str(info.value) == check_input_size(bad)


def test_warmup_and_release(weights):
    p = HumanParser(weights, device="cpu")
    assert p.warmup(1) > 0
    p.release()
    assert p.model is None


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "tpu:0", "", "cuda:-1"])
def test_resolve_device_refuses(spec):
    with pytest.raises(ValueError) as info:
        resolve_device(spec)
    assert repr(spec.strip().lower())[1:-1] in str(info.value)


def test_resolve_device_accepts():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        for spec in ("cuda", "cuda:0"):
            with pytest.raises(ValueError, match="not available"):
                resolve_device(spec)
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ValueError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_precision_fp16_on_cpu_falls_back(weights):
    dtype, note = resolve_precision("fp16", torch.device("cpu"))
    assert dtype == torch.float32 and "fp16" in note
    assert resolve_precision("fp32", torch.device("cpu")) == (torch.float32, None)
    assert resolve_precision("bf16", torch.device("cpu")) == (torch.bfloat16, None)
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8", torch.device("cpu"))

    p = HumanParser(weights, device="cpu", precision="fp16")
    assert p.dtype == torch.float32 and p.precision_note and "fp16" in p.precision_note
    assert all(t.dtype == torch.float32 for t in p.model.parameters())


def test_resize_nearest_hand_made():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)  # [[0 1 2] [3 4 5]]
    np.testing.assert_array_equal(resize_nearest(image, (4, 6)), [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                                                  [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])
    np.testing.assert_array_equal(resize_nearest(image, (1, 2)), [[0, 1]])
    rgb = np.dstack([image, image + 10, image + 20])
    out = resize_nearest(rgb, (3, 3))
    assert out.shape == (3, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 2], [0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(out[..., 2], out[..., 0] + 20)
    np.testing.assert_array_equal(resize_nearest(rgb, (2, 3)), rgb)
    with pytest.raises(ValueError, match="0 x 3"):
        resize_nearest(image, (0, 3))


def test_compiled_network_parses_like_eager(weights, photo):
    """compile_mode runs the network through torch.compile (here the CPU's inductor): same labels."""
    eager = HumanParser(weights, device="cpu")
    compiled = HumanParser(weights, device="cpu", compile_mode="default")
    assert "compiled (default)" in compiled.describe() and "compiled" not in eager.describe()
    small = photo[::4, ::4].copy()
    a, b = eager.parse(small), compiled.parse(small)
    assert (a.labels == b.labels).mean() > 0.999
    with pytest.raises(ValueError, match="compile mode must be one of"):
        HumanParser(weights, device="cpu", compile_mode="fast")
    with pytest.raises(ValueError, match="'cudagraphs' needs a CUDA device"):
        HumanParser(weights, device="cpu", compile_mode="cudagraphs")
