"""Camera bytes <-> RGB arrays, without ROS or cv_bridge.

``decode_raw`` takes the fields of a sensor_msgs/Image, ``decode_compressed``
those of a sensor_msgs/CompressedImage. Anything malformed raises ImageError
with a one-line reason; nothing here trusts the sender.
"""
from __future__ import annotations

import array
import io
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
               is_bigendian: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image fields -> H x W x 3 uint8 RGB (a view where no conversion is needed).

    Images over ``max_pixels`` raise ImageTooLarge before any conversion.
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        if encoding in _DEPTH:
            raise ImageError(f"encoding '{encoding}' is a depth/float image, not a camera image")
        raise ImageError(f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageError(f"zero-size image ({width}x{height})")
    check_pixels(width, height, min(max_pixels, MAX_PIXELS))
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


def decode_compressed(fmt: str, data: ImageBytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, ...) -> H x W x 3 uint8 RGB.

    The size is read from the header first: images over ``max_pixels`` raise ImageTooLarge
    without being decoded.
    """
    from PIL import Image

    raw = bytes(data)
    if not raw:
        raise ImageError(f"empty compressed image (format '{fmt}')")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            check_pixels(img.width, img.height, min(max_pixels, MAX_PIXELS), "compressed image")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey, or Pillow's 32-bit signed "I": clipped to 16 bits first, never wrapped around
                grey = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
                return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(img.convert("RGB"))
    except ImageError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise ImageError(f"undecodable compressed image (format '{fmt}'): {err}") from None


def encode_like(rgb: np.ndarray, input_encoding: str) -> tuple[np.ndarray, str]:
    """An RGB picture in the input's colour order: bgr8 for BGR-family inputs, rgb8 otherwise."""
    layout = ENCODINGS.get(input_encoding)
    if layout is not None and layout.order in ("bgr", "bgra"):
        return rgb[..., ::-1], "bgr8"
    return rgb, "rgb8"
