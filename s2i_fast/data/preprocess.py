"""The seed's preprocessing, shared by training, `generate`, the Engine and export.

Sketches: greyscale (RGBA composited on white), resized to the model size, inverted so strokes
are high, scaled to [0, 1], then (v - mean) / scale with the data set's statistics.
Photos: RGB, resized, [0, 1], (v - mean) / scale. Model outputs go back the same way.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image

from s2i_fast.config import PreprocessStats
from s2i_fast.fileio import file_kind, stat_regular

# The one reader of user images (sketches, photos; files, bytes or file objects).
MAX_IMAGE_BYTES = 64 * 2**20  # a file larger than this is refused before it is read
MAX_IMAGE_PIXELS = 8192 * 8192  # width * height, checked from the header before decoding
# Pillow's other readers (EPS runs Ghostscript, among others) are never asked
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


def _describe(source) -> str:  # noqa: ANN001
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the image bytes"
    return str(getattr(source, "name", None) or "the image stream")


def read_image_bytes(path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:  # noqa: ANN001
    """The bytes of a regular file; DataError for anything else (nothing blocks).

    A FIFO, device, socket or folder is refused from os.stat, before any open for reading;
    the open itself is non-blocking and re-checked with fstat, so a pipe swapped in
    meanwhile cannot block either.
    """
    from s2i_fast.errors import DataError, ImageTooLarge

    st = stat_regular(path, DataError, "no such file", "not an image file")
    if st.st_size > max_bytes:
        raise ImageTooLarge(f"{path}: {st.st_size} bytes; images are limited to {max_bytes} "
                            "bytes")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind:
            raise DataError(f"{path}: is {kind}, not an image file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{path}: more than {max_bytes} bytes; images are limited to that")
    return data


def check_pixels(width: int, height: int, where: str, max_pixels: int = MAX_IMAGE_PIXELS,
                 what: str = "the image") -> None:
    """DataError for an image without pixels, ImageTooLarge above the pixel cap."""
    from s2i_fast.errors import DataError, ImageTooLarge

    if width < 1 or height < 1:
        raise DataError(f"{where}: {what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{where}: {width}x{height} = {width * height} pixels; the limit "
                            f"is {max_pixels}")


def load_image(source, mode: str, *, max_bytes: int = MAX_IMAGE_BYTES,  # noqa: ANN001
               max_pixels: int = MAX_IMAGE_PIXELS, formats: tuple[str, ...] = IMAGE_FORMATS,
               name: str | None = None) -> Image.Image:
    """A user image as 'L' (sketch) or 'RGB' (photo), fully decoded and detached from its file.

    source: a path (regular files only), bytes, or a binary file object. Refused with one
    DataError naming the file: anything but a regular file, more than max_bytes, a format
    outside `formats`, 0 pixels or more than max_pixels (from the header, before decoding), a
    truncated or damaged image. Every mode and bit depth is normalised (to_mode).
    """
    from s2i_fast.errors import DataError, ImageTooLarge

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    where = name or _describe(source)
    if isinstance(source, (str, os.PathLike)):
        data = read_image_bytes(source, max_bytes)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as e:
            raise DataError(f"{where}: cannot read ({e})") from None
        if not isinstance(data, bytes):
            raise DataError(f"{where}: expected a binary stream, got {type(data).__name__}")
    else:
        raise DataError(f"{where}: expected a path, bytes or a binary file object, got "
                        f"{type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{where}: more than {max_bytes} bytes; images are limited to that")
    if not data:
        raise DataError(f"{where}: empty file (0 bytes)")
    return decode_image(data, mode, where, max_pixels=max_pixels, formats=formats)


def decode_image(data: bytes, mode: str, where: str, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 formats: tuple[str, ...] = IMAGE_FORMATS) -> Image.Image:
    """Image bytes -> 'L' or 'RGB' (see load_image); DataError naming `where` otherwise."""
    from s2i_fast.errors import DataError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))  # the header only
            fmt, (width, height) = im.format, im.size
    except Image.UnidentifiedImageError:
        raise DataError(f"{where}: not an image (its bytes are none of "
                        f"{', '.join(formats)})") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for foreign bytes
        raise DataError(f"{where}: not an image in a known format ({_short(e)})") from None
    try:
        if fmt not in formats:
            raise DataError(f"{where}: the image is {fmt}; expected {', '.join(formats)}")
        check_pixels(width, height, where, max_pixels, what=f"the {fmt} image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
                out = to_mode(im, mode)
                out.load()
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, struct.error, ...
            raise DataError(f"{where}: the {fmt} image is damaged or truncated "
                            f"({_short(e)})") from None
    finally:
        im.close()
    return out


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())[:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to 'L' or 'RGB', putting transparent pixels on white.

    16-bit and 32-bit integer images are scaled from 0..65535, float images from 0..1 (when
    every value lies there; otherwise clipped to 0..255), LAB through an ICC transform.
    """
    if im.mode == "La":  # premultiplied: Pillow converts it to LA only
        im = im.convert("LA")
    if im.mode in ("RGBA", "RGBa", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8))
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0,
                            neginf=0.0)
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    elif im.mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                            ImageCms.createProfile("sRGB"), "LAB", "RGB")
        im = ImageCms.applyTransform(im, transform)
    return im.convert(mode)


def resize(im: Image.Image, size: int) -> Image.Image:
    """Square resize; area (box) filter when shrinking, bilinear when enlarging."""
    if im.size == (size, size):
        return im
    shrinking = im.size[0] >= size and im.size[1] >= size
    return im.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def sketch_to_uint8(im: Image.Image, size: int) -> np.ndarray:
    """Black-on-white sketch of any size/mode -> uint8 [size, size], still black-on-white."""
    return np.asarray(resize(to_mode(im, "L"), size), dtype=np.uint8)


def normalize_sketch_uint8(sketch: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """uint8 black-on-white [B, H, W] -> model space [B, 1, H, W] (inverted, centred, scaled).

    Written with plain tensor ops so that ONNX export can fold it into the graph.
    """
    v = 1.0 - sketch.to(torch.float32)[:, None] / 255.0  # strokes high, [0, 1]
    mean = torch.tensor(stats.sketch_mean, dtype=torch.float32, device=v.device)
    scale = torch.tensor(stats.sketch_scale, dtype=torch.float32, device=v.device)
    return (v - mean.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)


def normalize_photo(photo01: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Photo in [0, 1], [B, 3, H, W] or [3, H, W] -> model space."""
    mean = torch.tensor(stats.photo_mean, dtype=photo01.dtype, device=photo01.device)
    scale = torch.tensor(stats.photo_scale, dtype=photo01.dtype, device=photo01.device)
    shape = (-1, 1, 1)
    return (photo01 - mean.view(shape)) / scale.view(shape)


def denormalize_photo(x: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Model space [B, 3, H, W] -> [0, 1] (clamped)."""
    mean = torch.tensor(stats.photo_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    scale = torch.tensor(stats.photo_scale, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * scale + mean).clamp(0.0, 1.0)


def to_uint8_hwc(x: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Model space [B, 3, H, W] -> uint8 RGB [B, H, W, 3].

    The NHWC permute comes before the cast to uint8, so that in an exported graph the uint8
    output is produced by the Cast itself: TensorRT accepts a uint8 network output only from a
    Cast (or Identity) layer. Rounding and clamping are elementwise, so the order changes no
    value.
    """
    v = denormalize_photo(x.float(), stats)
    levels = (v * 255.0 + 0.5).floor().clamp(0, 255)  # [B, 3, H, W] f32, whole numbers
    return levels.permute(0, 2, 3, 1).contiguous().to(torch.uint8)  # [B, H, W, 3]
