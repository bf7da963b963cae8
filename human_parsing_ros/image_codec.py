"""Camera bytes <-> RGB arrays, without ROS or cv_bridge.

``decode_raw`` takes the fields of a sensor_msgs/Image, ``decode_compressed``
those of a sensor_msgs/CompressedImage. Anything malformed raises ImageError
with a one-line reason; nothing here trusts the sender. ``DecodeLimits`` bounds
what a frame may cost before it is decoded: its pixels, sides and aspect ratio,
a progressive JPEG's scans, and (measured) the decode's time.
"""
from __future__ import annotations

import array
import io
import time
from dataclasses import dataclass

import numpy as np

MAX_PIXELS = 8192 * 8192  # refuse absurd sizes before allocating
ImageBytes = bytes | bytearray | memoryview | array.array  # rclpy hands over array.array('B')


class ImageError(ValueError):
    """A camera message that cannot be turned into an image; the message says why."""


class ImageTooLarge(ImageError):
    """An image over the pixel limit, refused before anything of its size was allocated."""


def check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """ImageTooLarge when ``width`` x ``height`` is over ``max_pixels``."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} {width}x{height} = {width * height} pixels is over the limit of "
                            f"{max_pixels} pixels")


@dataclass(frozen=True)
class DecodeLimits:
    """What one camera frame may be before it is decoded (and how long a compressed one may take)."""

    max_pixels: int = 3840 * 2160
    min_side: int = 8  # a frame thinner than this holds no person
    max_side: int = 16384
    max_aspect_ratio: float = 20.0  # long side / short side
    max_jpeg_scans: int = 32  # a progressive JPEG decodes once per scan (libjpeg's default progression has 10)
    max_decode_ms: float = 1000.0  # a compressed frame that took longer is refused (0: no limit)


def check_geometry(width: int, height: int, limits: DecodeLimits, what: str = "image") -> None:
    """ImageError naming the size when a ``width`` x ``height`` frame is outside ``limits`` (ImageTooLarge
    when it has too many pixels)."""
    check_pixels(width, height, min(limits.max_pixels, MAX_PIXELS), what)
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        raise ImageError(f"{what} {width}x{height} has a side under {limits.min_side} pixels")
    if long > limits.max_side:
        raise ImageError(f"{what} {width}x{height} has a side over {limits.max_side} pixels")
    if long > limits.max_aspect_ratio * short:
        raise ImageError(f"{what} {width}x{height} has an aspect ratio of {long / short:.0f}:1, over "
                         f"{limits.max_aspect_ratio:g}:1")


@dataclass(frozen=True)
class Layout:
    channels: int
    itemsize: int  # bytes per channel value
    order: str  # "rgb", "bgr", "rgba", "bgra", "mono", "uyvy", "yuyv"

    @property
    def bytes_per_pixel(self) -> int:
        return 2 if self.order in ("uyvy", "yuyv") else self.channels * self.itemsize


# Names as in sensor_msgs/image_encodings.hpp. As in cv_bridge, "yuv422" is UYVY
# byte order and "yuv422_yuy2" is YUYV.
ENCODINGS: dict[str, Layout] = {
    "rgb8": Layout(3, 1, "rgb"), "bgr8": Layout(3, 1, "bgr"),
    "rgba8": Layout(4, 1, "rgba"), "bgra8": Layout(4, 1, "bgra"),
    "mono8": Layout(1, 1, "mono"), "8UC1": Layout(1, 1, "mono"), "8UC3": Layout(3, 1, "bgr"),
    "8UC4": Layout(4, 1, "bgra"),
    "rgb16": Layout(3, 2, "rgb"), "bgr16": Layout(3, 2, "bgr"),
    "rgba16": Layout(4, 2, "rgba"), "bgra16": Layout(4, 2, "bgra"), "mono16": Layout(1, 2, "mono"),
    "yuv422": Layout(2, 1, "uyvy"), "uyvy": Layout(2, 1, "uyvy"),
    "yuv422_yuy2": Layout(2, 1, "yuyv"), "yuyv": Layout(2, 1, "yuyv"),
}
_DEPTH = {"16UC1", "32FC1", "16SC1", "32SC1", "64FC1"}


def decode_raw(encoding: str, height: int, width: int, step: int, data: ImageBytes,
               is_bigendian: bool = False, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """sensor_msgs/Image fields -> H x W x 3 uint8 RGB (a view where no conversion is needed).

    Frames outside ``limits`` raise ImageError (ImageTooLarge: too many pixels) before any conversion.
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        if encoding in _DEPTH:
            raise ImageError(f"encoding '{encoding}' is a depth/float image, not a camera image")
        raise ImageError(f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageError(f"zero-size image ({width}x{height})")
    check_geometry(width, height, limits)
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width {width} x {layout.bytes_per_pixel} bytes = {row_bytes}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise ImageError(f"data is {buffer.size} bytes, expected step x height = {step * height}")
    if layout.order in ("uyvy", "yuyv"):
        if width % 2:
            raise ImageError(f"{encoding} needs an even width, got {width}")
        packed = buffer.reshape(height, step)[:, :row_bytes].reshape(height, width // 2, 4)
        return _yuv422_to_rgb(packed, layout.order)
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if layout.itemsize == 2:
        values = rows.view(">u2" if is_bigendian else "<u2").reshape(height, width, layout.channels)
        pixels = (values >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, layout.channels)
    return _to_rgb(pixels, layout.order)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == "rgb":
        return pixels
    if order == "bgr":
        return pixels[..., ::-1]
    if order == "rgba":
        return pixels[..., :3]
    if order == "bgra":
        return pixels[..., 2::-1]
    return np.repeat(pixels, 3, axis=2)  # mono


def _yuv422_to_rgb(packed: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 (two pixels per 4 bytes) -> RGB, ITU-R BT.601 limited range."""
    if order == "uyvy":
        u, y0, v, y1 = (packed[..., i].astype(np.float32) for i in range(4))
    else:
        y0, u, y1, v = (packed[..., i].astype(np.float32) for i in range(4))
    h, half = packed.shape[:2]
    y = np.empty((h, half * 2), dtype=np.float32)
    y[:, 0::2], y[:, 1::2] = y0, y1
    y = (y - 16.0) * 1.164
    u = np.repeat(u - 128.0, 2, axis=1)
    v = np.repeat(v - 128.0, 2, axis=1)
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], axis=2)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def compressed_kind(fmt: str, raw: bytes) -> str:
    """``"JPEG"`` or ``"PNG"``: what the bytes are by their magic, checked against the message's ``format``
    (``jpeg``, ``png``, or image_transport's ``"bgr8; jpeg compressed bgr8"``; empty: the bytes decide).
    Anything else is refused: image_transport's compressed transport carries JPEG and PNG only, and every
    other decoder is attack surface the node does not need."""
    kind = "JPEG" if raw.startswith(JPEG_MAGIC) else "PNG" if raw.startswith(PNG_MAGIC) else None
    if kind is None:
        raise ImageError(f"compressed image (format '{fmt}') is neither JPEG nor PNG by its first bytes "
                         f"({raw[:4].hex()}); only JPEG and PNG are accepted")
    claimed = fmt.lower()
    says = {k for k, words in (("JPEG", ("jpeg", "jpg")), ("PNG", ("png",))) if any(w in claimed for w in words)}
    if claimed.strip() and says != {kind}:
        raise ImageError(f"compressed image says format '{fmt}' but its bytes are {kind}; only JPEG and PNG "
                         "are accepted, and format must name the one sent")
    return kind


def jpeg_scan_count(raw: bytes, limit: int) -> int:
    """The start-of-scan markers of a JPEG, counted until one more than ``limit`` (a progressive JPEG is
    decoded once per scan). Marker segments are skipped by their lengths; in entropy-coded data a 0xFF is
    followed by 0x00 (a stuffed byte) or a restart marker unless a new marker begins."""
    scans, i, end = 0, 2, len(raw)
    while i + 4 <= end and scans <= limit:
        if raw[i] != 0xFF:
            i += 1
            continue
        marker = raw[i + 1]
        if marker == 0xFF or marker == 0x00 or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # end of image
            break
        length = int.from_bytes(raw[i + 2:i + 4], "big")
        i += 2 + length
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            scans += 1
            while i + 1 < end and not (raw[i] == 0xFF and raw[i + 1] not in (0x00, *range(0xD0, 0xD8))):
                i += 1
    return scans


def decode_compressed(fmt: str, data: ImageBytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> H x W x 3 uint8 RGB.

    The header is read first: frames outside ``limits`` (size, aspect ratio, a progressive JPEG's scans)
    raise ImageError without being decoded; a decode that took over ``limits.max_decode_ms`` is refused too.
    """
    from PIL import Image

    raw = bytes(data)
    if not raw:
        raise ImageError(f"empty compressed image (format '{fmt}')")
    kind = compressed_kind(fmt, raw)
    start = time.perf_counter()
    try:
        with Image.open(io.BytesIO(raw), formats=[kind]) as img:
            check_geometry(img.width, img.height, limits, "compressed image")
            if kind == "JPEG" and img.info.get("progressive"):
                scans = jpeg_scan_count(raw, limits.max_jpeg_scans)
                if scans > limits.max_jpeg_scans:
                    raise ImageError(f"progressive JPEG with over {limits.max_jpeg_scans} scans "
                                     f"(max_jpeg_scans): refused before decoding")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey, or Pillow's 32-bit signed "I": clipped to 16 bits first, never wrapped around
                grey = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
                rgb = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB"))
    except ImageError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise ImageError(f"undecodable compressed image (format '{fmt}'): {err}") from None
    took_ms = (time.perf_counter() - start) * 1e3
    if limits.max_decode_ms and took_ms > limits.max_decode_ms:
        raise ImageError(f"decoding the {kind} frame took {took_ms:.0f} ms, over max_decode_ms "
                         f"{limits.max_decode_ms:g}")
    return rgb


def encode_like(rgb: np.ndarray, input_encoding: str) -> tuple[np.ndarray, str]:
    """An RGB picture in the input's colour order: bgr8 for BGR-family inputs, rgb8 otherwise."""
    layout = ENCODINGS.get(input_encoding)
    if layout is not None and layout.order in ("bgr", "bgra"):
        return rgb[..., ::-1], "bgr8"
    return rgb, "rgb8"
