"""The one image decoder: any file or pixel array -> an 8-bit RGB PIL image (`Dataset.image` calls it, so every
encoder, thumbnail and Ray decoding task sees the same pixels).

- 16-bit samples (PNG/TIFF "I;16", PGM) are scaled by the 16-bit range (v / 257); 32-bit integer samples by
  the int32 range [0, 2**31 - 1]; float samples ("F") by their documented range [0, 1].
- Where that range is ambiguous the image is refused with the reason (a float image with values outside
  [0, 1] or NaN, a 32-bit image with negative values or whose values all fit in 16 bits).
- Transparent pixels (RGBA, LA, palette or colour-key transparency) are composited over white; CMYK and
  other colour spaces go through PIL's conversion to RGB.
- Images larger than `max_image_pixels()` (default 64 megapixels, $SELECTOR_MAX_IMAGE_PIXELS) are refused
  from their header, before any pixel is decoded; the same limit replaces PIL's own.
A refused or undecodable image raises InputError naming the file and why; the embedding stage then skips it
like any unreadable image (a NaN row, counted in the run manifest).
"""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from selector.errors import InputError

DECODER_VERSION = 2                   # part of a file dataset's fingerprint: bump when decoding changes pixels
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
MAX_PIXELS_ENV = "SELECTOR_MAX_IMAGE_PIXELS"
BACKGROUND = (255, 255, 255)          # what transparent pixels become
_INT32_TOP = 2 ** 31 - 1
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def max_image_pixels() -> int:
    """The largest image (width x height) decoded: $SELECTOR_MAX_IMAGE_PIXELS, else 64,000,000."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV} must be a whole number of pixels >= 1 (e.g. 100000000), got {text!r}.")
    return value


def open_rgb(path, *, where: str = "") -> Image.Image:
    """The image file at path as 8-bit RGB; InputError saying which file and why when it cannot be used."""
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit      # PIL's own check (at twice this) agrees with ours
    label = f"{path}{f' ({where})' if where else ''}"
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > limit:
                raise InputError(_too_big(label, f"{w:,} x {h:,} = {w * h:,}", limit))
            bits = _declared_bits(im)
            im.load()
            rgb = to_rgb(im, bits=bits, name=label)
            return im.copy() if rgb is im else rgb    # never the file's own image: closing it ends its use
    except Image.DecompressionBombError as e:   # PIL's check, at twice the limit, came first
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise InputError(_too_big(label, f"{int(pixels[1]):,}" if pixels else "more than twice that", limit)) from e
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed file can make a decoder raise anything
        raise InputError(f"Cannot decode image {label}: {e}. Replace the file with a valid image or remove it "
                         "from the dataset.") from e


def array_rgb(pixels, *, name: str = "pixels") -> Image.Image:
    """A pixel array ((H, W) or (H, W, 3|4); uint8, uint16, int32 or float in [0, 1]) as 8-bit RGB."""
    try:
        image = Image.fromarray(np.ascontiguousarray(pixels))
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: cannot make an image of an array of shape {np.shape(pixels)} and dtype "
                         f"{getattr(pixels, 'dtype', '?')} ({e}).") from e
    return to_rgb(image, name=name)


def to_rgb(image: Image.Image, *, bits: int | None = None, name: str = "image") -> Image.Image:
    """A decoded PIL image of any mode as 8-bit RGB. bits: the sample depth the file declares for mode "I"
    (16 for a 16-bit PNG or PGM that PIL holds as 32-bit ints; None or 32 for 32-bit data)."""
    if image.mode in _16BIT_MODES or image.mode in ("I", "F"):
        image = Image.fromarray(_gray8(image, bits, name), mode="L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _gray8(image: Image.Image, bits, name: str) -> np.ndarray:
    """(H, W) uint8 of a one-channel 16-bit, 32-bit integer or float image, scaled by the range of its type."""
    a = np.asarray(image)
    if image.mode in _16BIT_MODES or (image.mode == "I" and bits == 16):
        return _scale(a, 65_535, name, "16-bit")
    if image.mode == "I":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0:
            raise InputError(f"Refused image {name}: 32-bit integer samples with negative values ({lo}..{hi}) "
                             "have no brightness range to scale by. Save it as an 8- or 16-bit PNG/TIFF.")
        if hi <= 65_535:
            raise InputError(f"Refused image {name}: 32-bit integer samples whose values all fit in 16 bits "
                             f"({lo}..{hi}) are ambiguous (16-bit data, or a nearly black 32-bit image). Save it "
                             "as a 16-bit PNG/TIFF.")
        return _scale(a, _INT32_TOP, name, "32-bit")
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (np.nan, np.nan)
    if not finite.all() or lo < -1e-6 or hi > 1 + 1e-6:
        what = "NaN/inf" if not finite.all() else f"values {lo:.4g}..{hi:.4g}"
        raise InputError(f"Refused image {name}: a float image must hold values in [0, 1]; it has {what}, so its "
                         "brightness scale is ambiguous. Scale it to [0, 1] or save it as an 8- or 16-bit image.")
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _scale(a: np.ndarray, top: int, name: str, what: str) -> np.ndarray:
    """Integer samples in [0, top] -> uint8, rounded to the nearest level (65535 -> 255, 257 -> 1)."""
    v = a.astype(np.int64)
    if v.size and (v.min() < 0 or v.max() > top):
        raise InputError(f"Refused image {name}: {what} samples outside [0, {top}] ({v.min()}..{v.max()}).")
    return ((v * 255 + top // 2) // top).astype(np.uint8)


def _declared_bits(im: Image.Image) -> int | None:
    """16 when the file declares 16-bit samples that PIL holds in a 32-bit "I" image (16-bit PNGs, PGMs), else
    None. Read before load(), which drops the tile list."""
    if im.mode != "I":
        return None
    if im.format == "PPM":            # PIL scales every PGM/PPM maxval to 16 bits
        return 16
    args = im.tile[0].args if im.tile else None
    rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
    return 16 if "16" in rawmode else None


def _too_big(label: str, pixels: str, limit: int) -> str:
    return (f"Refused image {label}: {pixels} pixels is over the limit of {limit:,} (a decompression bomb, or a "
            f"larger image than expected). Raise {MAX_PIXELS_ENV} if it is genuine.")
