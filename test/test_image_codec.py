"""Camera bytes -> RGB without cv_bridge: every encoding the node accepts, and every way a message can be wrong."""
import array
import io

import numpy as np
import pytest
from PIL import Image

from human_parsing_ros.image_codec import (
    DecodeLimits,
    ImageError,
    ImageTooLarge,
    decode_compressed,
    encode_like,
    jpeg_scan_count,
)
from human_parsing_ros.image_codec import decode_raw as strict_decode_raw
from human_parsing_ros.samples import load_rgb, sample_photos

H, W = 6, 10
TINY_FRAMES = DecodeLimits(min_side=1, max_aspect_ratio=100)  # the encoding tests use frames of a few pixels


def decode_raw(*args, limits: DecodeLimits = TINY_FRAMES, **kwargs) -> np.ndarray:
    return strict_decode_raw(*args, limits=limits, **kwargs)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _pack(pixels: np.ndarray, pad: int = 0, fill: int = 0xAB) -> tuple[bytes, int]:
    """H x W x C (or H x W) array -> (bytes with ``pad`` junk bytes after each row, step)."""
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(pixels.shape[0], -1)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), fill, np.uint8)], axis=1)
    return padded.tobytes(), padded.shape[1]


def _decode_error(*args, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_raw(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- 8-bit colour orders

@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_orders(rgb, encoding, pad):
    alpha = np.random.default_rng(1).integers(0, 256, (H, W, 1), dtype=np.uint8)
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
                "bgra8": np.concatenate([rgb[..., ::-1], alpha], 2)}[encoding]
    data, step = _pack(channels, pad)
    out = decode_raw(encoding, H, W, step, data)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), memoryview])
def test_message_data_types(rgb, container):
    """rclpy hands uint8[] as array.array('B'); bytes and bytearray are common too."""
    data, step = _pack(rgb, 2)
    np.testing.assert_array_equal(decode_raw("rgb8", H, W, step, container(data)), rgb)


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8(rgb, pad):
    grey = rgb[..., 0]
    data, step = _pack(grey, pad)
    out = decode_raw("mono8", H, W, step, data)
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16(rgb, bigendian, pad):
    high = rgb[..., 0].astype(np.uint16)
    low = rgb[..., 1].astype(np.uint16)  # must not leak into the result
    values = (high << 8) | low
    data, step = _pack(values.astype(">u2" if bigendian else "<u2"), pad)
    out = decode_raw("mono16", H, W, step, data, is_bigendian=bigendian)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], rgb[..., 0])
    # The flag matters: read with the other byte order, the picture is a different one.
    wrong = decode_raw("mono16", H, W, step, data, is_bigendian=not bigendian)
    assert not np.array_equal(wrong, out)


def test_rgb16(rgb):
    values = (rgb.astype(np.uint16) << 8) | 0x7F
    data, step = _pack(values.astype("<u2"))
    np.testing.assert_array_equal(decode_raw("rgb16", H, W, step, data), rgb)


# ---------------------------------------------------------------- YUV 4:2:2

def _bt601_limited(y, u, v):
    """Reference YCbCr (BT.601, limited range) -> RGB, derived from Kr, Kb rather than tabulated."""
    kr, kb = 0.299, 0.114
    kg = 1 - kr - kb
    yn = (np.asarray(y, float) - 16) * 255 / 219
    pb = (np.asarray(u, float) - 128) * 255 / 224
    pr = (np.asarray(v, float) - 128) * 255 / 224
    r = yn + 2 * (1 - kr) * pr
    g = yn - 2 * (1 - kb) * kb / kg * pb - 2 * (1 - kr) * kr / kg * pr
    b = yn + 2 * (1 - kb) * pb
    return np.clip(np.stack([r, g, b], -1), 0, 255)


def _pack_422(y, u, v, order, pad=0):
    """Per-pixel Y (H x W) and per-pair U, V (H x W/2) -> packed bytes."""
    h, w = y.shape
    packed = np.empty((h, w // 2, 4), np.uint8)
    if order == "uyvy":
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    return _pack(packed.reshape(h, w * 2), pad)


@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("uyvy", "uyvy"),
                                            ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_yuv422_random(encoding, order):
    rng = np.random.default_rng(2)
    y = rng.integers(16, 236, (H, W), dtype=np.uint8)
    u = rng.integers(16, 241, (H, W // 2), dtype=np.uint8)
    v = rng.integers(16, 241, (H, W // 2), dtype=np.uint8)
    data, step = _pack_422(y, u, v, order, pad=6)
    out = decode_raw(encoding, H, W, step, data)
    expected = _bt601_limited(y, np.repeat(u, 2, 1), np.repeat(v, 2, 1))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - expected).max() <= 2.0


@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("yuv422_yuy2", "yuyv")])
def test_yuv422_known_colours(encoding, order):
    # Standard BT.601 limited-range codes: black, white, mid grey, red, green, blue (Y, Cb, Cr).
    colours = {(16, 128, 128): (0, 0, 0), (235, 128, 128): (255, 255, 255), (126, 128, 128): (128, 128, 128),
               (81, 90, 240): (255, 0, 0), (145, 54, 34): (0, 255, 0), (41, 240, 110): (0, 0, 255)}
    for (yy, uu, vv), expected in colours.items():
        y = np.full((2, 4), yy, np.uint8)
        u = np.full((2, 2), uu, np.uint8)
        v = np.full((2, 2), vv, np.uint8)
        data, step = _pack_422(y, u, v, order)
        out = decode_raw(encoding, 2, 4, step, data)
        assert np.abs(out.astype(int) - np.array(expected)).max() <= 3, (yy, uu, vv, out[0, 0])


def test_uyvy_and_yuyv_are_different_byte_orders():
    """Two pixels of a pair differ in Y only; each decoder must put them in the right place."""
    y = np.array([[50, 200, 50, 200]], np.uint8)
    u = np.full((1, 2), 128, np.uint8)
    v = np.full((1, 2), 128, np.uint8)
    for encoding, order in (("yuv422", "uyvy"), ("yuv422_yuy2", "yuyv")):
        data, step = _pack_422(y, u, v, order)
        out = decode_raw(encoding, 1, 4, step, data)
        assert out[0, 0, 0] < 60 and out[0, 1, 0] > 200, (encoding, out[0, :, 0])
        # Decoded as the other order, the bytes give another picture.
        other = "yuv422_yuy2" if encoding == "yuv422" else "yuv422"
        assert not np.array_equal(decode_raw(other, 1, 4, step, data), out)


# ---------------------------------------------------------------- refusals

def test_unknown_encoding(rgb):
    data, step = _pack(rgb)
    assert "hsv8" in _decode_error("hsv8", H, W, step, data)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_encodings_refused(encoding):
    itemsize = 2 if encoding == "16UC1" else 4
    message = _decode_error(encoding, H, W, W * itemsize, bytes(H * W * itemsize))
    assert encoding in message and "depth" in message


@pytest.mark.parametrize("height,width", [(0, W), (H, 0), (0, 0), (-1, W)])
def test_zero_size(height, width):
    message = _decode_error("rgb8", height, width, max(width, 0) * 3, b"")
    assert "size" in message


def test_step_too_small(rgb):
    data, _ = _pack(rgb)
    message = _decode_error("rgb8", H, W, W * 3 - 1, data)
    assert "step" in message and str(W * 3 - 1) in message


@pytest.mark.parametrize("delta", [-1, -(W * 3), 1])
def test_data_length_must_match(rgb, delta):
    data, step = _pack(rgb)
    data = data[:delta] if delta < 0 else data + b"\0" * delta
    message = _decode_error("rgb8", H, W, step, data)
    assert str(len(data)) in message and str(step * H) in message


def test_truncated_mono16_and_yuv():
    _decode_error("mono16", H, W, W * 2, bytes(H * W * 2 - 1))
    _decode_error("yuv422", H, W, W * 2, bytes(H * W * 2 - 2))


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_odd_width_yuv(encoding):
    width = 5
    message = _decode_error(encoding, 2, width, 12, bytes(24))
    assert "width" in message and str(width) in message


def test_absurd_size_refused_before_allocating():
    message = _decode_error("rgb8", 100000, 100000, 300000, b"")
    assert "100000x100000" in message and "over the limit" in message


def test_raw_image_over_the_callers_limit_is_refused_before_decoding():
    with pytest.raises(ImageTooLarge, match="40x30 = 1200 pixels is over the limit of 1000 pixels"):
        decode_raw("rgb8", 30, 40, 120, bytes(30 * 120), limits=DecodeLimits(max_pixels=1000))
    assert decode_raw("rgb8", 30, 40, 120, bytes(30 * 120), limits=DecodeLimits(max_pixels=1200)).shape == (30, 40, 3)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_image_size_is_checked_from_the_header_before_decoding(fmt, monkeypatch):
    big = _encode(np.zeros((3000, 4000, 3), np.uint8), fmt.upper())  # 36 MB decoded, a few KB here
    assert len(big) < 1_000_000

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image over the limit")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # what decodes JPEG and PNG data
    monkeypatch.setattr(Image.Image, "convert", no_decoding)
    with pytest.raises(ImageTooLarge, match="4000x3000 = 12000000 pixels is over the limit of 8294400 pixels"):
        decode_compressed(fmt, big, DecodeLimits(max_pixels=3840 * 2160))


# ---------------------------------------------------------------- compressed

@pytest.fixture(scope="module")
def photo():
    image = load_rgb(sample_photos()[0])
    return np.asarray(Image.fromarray(image).resize((110, 164), Image.BILINEAR))


def _encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_png_is_exact(photo):
    out = decode_compressed("png", _encode(photo, "PNG"))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, photo)


def test_png_rgba_and_grey(photo):
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 7, np.uint8)], 2)
    np.testing.assert_array_equal(decode_compressed("png", _encode(rgba, "PNG")), photo)
    grey = photo[..., 1]
    out = decode_compressed("png", _encode(grey, "PNG"))
    assert out.shape == photo.shape
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_png_16bit_grey(photo):
    values = (photo[..., 0].astype(np.uint16) << 8) | photo[..., 2]
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    out = decode_compressed("mono16; png compressed", buffer.getvalue())
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], photo[..., 0])


@pytest.mark.parametrize("fmt, saved_as", [("jpeg", "BMP"), ("jpeg", "TIFF"), ("jpeg", "GIF"), ("jpeg", "WEBP"),
                                            ("tiff", "TIFF"), ("bmp", "BMP"), ("", "ICO")])
def test_only_jpeg_and_png_are_decoded_whatever_the_format_field_says(photo, fmt, saved_as, monkeypatch):
    data = _encode(photo, saved_as)

    def no_decoding(*args, **kwargs):
        raise AssertionError("opened a decoder other than JPEG's or PNG's")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(ImageError, match="neither JPEG nor PNG by its first bytes") as info:
        decode_compressed(fmt, data)
    assert "\n" not in str(info.value)


def test_the_format_field_must_name_what_the_bytes_are(photo):
    png, jpeg = _encode(photo, "PNG"), _encode(photo, "JPEG")
    with pytest.raises(ImageError, match="says format 'jpeg' but its bytes are PNG"):
        decode_compressed("jpeg", png)
    with pytest.raises(ImageError, match="says format 'bgr8; png compressed bgr8' but its bytes are JPEG"):
        decode_compressed("bgr8; png compressed bgr8", jpeg)
    with pytest.raises(ImageError, match="says format 'tiff' but its bytes are PNG"):
        decode_compressed("tiff", png)
    np.testing.assert_array_equal(decode_compressed("", png), photo)  # no format: the bytes decide
    assert decode_compressed("JPG", jpeg).shape == photo.shape


@pytest.mark.parametrize("width, height, reason", [
    (8_000_000, 1, "has a side under 8 pixels"), (1, 8_000_000, "has a side under 8 pixels"),
    (2000, 20, "aspect ratio of 100:1, over 20:1"), (20000, 1000, "has a side over 16384 pixels"),
])
def test_raw_frames_of_absurd_geometry_are_refused_before_decoding(width, height, reason):
    message = _decode_error("rgb8", height, width, width * 3, b"", limits=DecodeLimits(max_pixels=8192 * 8192))
    assert f"{width}x{height}" in message and reason in message


def test_a_one_pixel_tall_png_within_the_pixel_limit_is_refused_from_its_header(monkeypatch):
    """The probe's 31 KB PNG of 1 x 8,000,000 pixels (under max_input_pixels) blocked the node for a minute."""
    thin = _encode(np.zeros((1, 8_000_000, 3), np.uint8), "PNG")
    assert len(thin) < 100_000
    from PIL import ImageFile

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a frame of absurd geometry")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="compressed image 8000000x1 has a side under 8 pixels"):
        decode_compressed("png", thin, DecodeLimits(max_pixels=3840 * 2160))


def scan_bomb(photo: np.ndarray, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans (the probe's bomb had
    20,000: each one is a pass over the whole image)."""
    data = _encode(photo, "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    body, tail = data[last:-2], data[-2:]
    have = jpeg_scan_count(data, 10_000)
    return data[:last] + body * (scans - have + 1) + tail


def test_progressive_jpeg_scans_are_counted_exactly(photo):
    plain = _encode(photo, "JPEG", quality=90)
    progressive = _encode(photo, "JPEG", quality=90, progressive=True)
    assert jpeg_scan_count(plain, 100) == 1
    assert 2 < jpeg_scan_count(progressive, 100) <= 16  # libjpeg's default progression
    assert jpeg_scan_count(scan_bomb(photo, 500), 10_000) == 500
    assert jpeg_scan_count(scan_bomb(photo, 500), 40) == 41  # stops one past the limit


def test_a_scan_bomb_jpeg_is_refused_before_decoding_and_a_normal_progressive_one_decodes(photo, monkeypatch):
    normal = _encode(photo, "JPEG", quality=90, progressive=True)
    assert decode_compressed("jpeg", normal).shape == photo.shape
    from PIL import ImageFile

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a scan bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="progressive JPEG with over 32 scans"):
        decode_compressed("jpeg", scan_bomb(photo, 2000))


def test_a_decode_over_its_time_limit_is_refused(photo):
    data = _encode(photo, "PNG")
    with pytest.raises(ImageError, match=r"decoding the PNG frame took \d+ ms, over max_decode_ms 1e-06"):
        decode_compressed("png", data, DecodeLimits(max_decode_ms=1e-6))
    assert decode_compressed("png", data, DecodeLimits(max_decode_ms=0)).shape == photo.shape  # 0: no limit


def test_jpeg(photo):
    data = _encode(photo, "JPEG", quality=95)
    out = decode_compressed("rgb8; jpeg compressed bgr8", bytearray(data))
    assert out.shape == photo.shape and out.dtype == np.uint8
    with Image.open(io.BytesIO(data)) as img:
        np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))
    # Lossy but close: colour channels in the right order (a BGR mix-up would be far off).
    error = np.abs(out.astype(float) - photo).mean()
    assert error < 4.0
    assert error < np.abs(out[..., ::-1].astype(float) - photo).mean()


def test_compressed_garbage_and_empty(photo):
    for data in (b"\x00\x01garbage" * 50, b"", bytearray()):
        with pytest.raises(ImageError) as info:
            decode_compressed("jpeg", data)
        assert "\n" not in str(info.value) and "jpeg" in str(info.value)
    truncated = _encode(photo, "JPEG")[:200]
    with pytest.raises(ImageError):
        decode_compressed("jpeg", truncated)


# ---------------------------------------------------------------- encode_like

@pytest.mark.parametrize("encoding", ["bgr8", "bgra8", "8UC3", "bgr16"])
def test_encode_like_bgr(rgb, encoding):
    out, out_encoding = encode_like(rgb, encoding)
    assert out_encoding == "bgr8"
    np.testing.assert_array_equal(out, rgb[..., ::-1])
    # Round trip through the decoder gives the picture back.
    data, step = _pack(out)
    np.testing.assert_array_equal(decode_raw(out_encoding, H, W, step, data), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "rgba8", "mono8", "yuv422", "not-an-encoding"])
def test_encode_like_rgb(rgb, encoding):
    out, out_encoding = encode_like(rgb, encoding)
    assert out_encoding == "rgb8"
    np.testing.assert_array_equal(out, rgb)
