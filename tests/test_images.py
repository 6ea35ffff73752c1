"""The one image decoder (selector.images, behind Dataset.image): files of every pixel type written by PIL or by
hand (16-bit PNG/TIFF/PGM, 16-bit colour with alpha, 32-bit int, float, palette transparency, CMYK) decode to
the 8-bit RGB values their type's range gives; ambiguous ranges and oversized images are refused with the
reason, and a refused image is skipped by the embedding stage like an unreadable one."""
import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selector.dataset import build_dataset
from selector.errors import InputError
from selector.images import MAX_PIXELS_ENV, max_image_pixels, open_rgb
from selector.sources import load_image_folder

RAMP16 = np.linspace(97, 65492, 48 * 40).round().astype(np.uint16).reshape(48, 40)   # the reported 16-bit image


def by257(v) -> np.ndarray:
    """The 8-bit level of 16-bit samples: round(v / 257)."""
    return np.rint(np.asarray(v, np.float64) / 257).astype(np.uint8)


def write_png16(path, samples: np.ndarray) -> Path:
    """A 16-bit PNG written byte by byte (PIL cannot write 16-bit colour): (H, W) grey, (H, W, 2) grey+alpha,
    (H, W, 3) RGB or (H, W, 4) RGBA."""
    s = samples if samples.ndim == 3 else samples[..., None]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[s.shape[2]]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in s)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", s.shape[1], s.shape[0], 16, colour_type, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))
    return Path(path)


def rgb(path) -> np.ndarray:
    image = open_rgb(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def grey_of(a: np.ndarray) -> np.ndarray:
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_by_257(tmp_path, suffix):
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(RAMP16).save(path)
    assert Image.open(path).mode == "I;16"
    got = grey_of(rgb(path))
    np.testing.assert_array_equal(got, by257(RAMP16))     # was: mean 254.7 with 3 distinct values
    assert len(np.unique(got)) > 200 and abs(got.mean() - RAMP16.mean() / 257) < 0.5


def test_16bit_pgm_and_12bit_pgm(tmp_path):
    (tmp_path / "g16.pgm").write_bytes(b"P5 40 48 65535\n" + RAMP16.astype(">u2").tobytes())
    np.testing.assert_array_equal(grey_of(rgb(tmp_path / "g16.pgm")), by257(RAMP16))
    twelve = (RAMP16 // 16).astype(np.uint16)             # maxval 4095: scaled by its own range
    (tmp_path / "g12.pgm").write_bytes(b"P5 40 48 4095\n" + twelve.astype(">u2").tobytes())
    expect = np.rint(twelve / 4095 * 255)
    assert np.abs(grey_of(rgb(tmp_path / "g12.pgm")).astype(int) - expect).max() <= 1


def test_16bit_colour_and_alpha_pngs(tmp_path):
    r, g, b = RAMP16, RAMP16[::-1], np.full_like(RAMP16, 30_000)
    near = lambda got, want: np.abs(got.astype(int) - np.asarray(want, float)).max() <= 1  # noqa: E731
    got = rgb(write_png16(tmp_path / "rgb16.png", np.stack([r, g, b], -1)))
    assert near(got[..., 0], r / 257) and near(got[..., 1], g / 257) and near(got[..., 2], b / 257)
    alpha = np.tile(np.linspace(0, 65535, 40).round().astype(np.uint16), (48, 1))
    got = rgb(write_png16(tmp_path / "rgba16.png", np.stack([r, g, b, alpha], -1)))
    a = alpha / 65535        # PIL keeps the high byte of colour and alpha, then blends: within 2 levels
    blend = lambda got, c: np.abs(got.astype(int) - (c / 257 * a + 255 * (1 - a))).max() <= 2  # noqa: E731
    assert blend(got[..., 0], r) and blend(got[..., 1], g) and blend(got[..., 2], b)
    assert (got[:, 0] == 255).all()                       # fully transparent: the white background
    got = rgb(write_png16(tmp_path / "la16.png", np.stack([RAMP16, alpha], -1)))
    assert blend(grey_of(got), RAMP16)


def test_float_images_use_the_range_0_1_and_refuse_others(tmp_path):
    f = (RAMP16 / 65535).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_array_equal(grey_of(rgb(tmp_path / "f.tif")), np.rint(f * 255).astype(np.uint8))
    Image.fromarray(f * 255).save(tmp_path / "f255.tif")  # was: all black
    with pytest.raises(InputError, match=r"f255.tif.*\[0, 1\].*values 0.3774..254.8"):
        open_rgb(tmp_path / "f255.tif")
    f[3, 4] = np.nan
    Image.fromarray(f).save(tmp_path / "fnan.tif")
    with pytest.raises(InputError, match="NaN/inf"):
        open_rgb(tmp_path / "fnan.tif")


def test_32bit_int_images(tmp_path):
    full = (np.linspace(0, 1, 48 * 40).reshape(48, 40) * (2 ** 31 - 1)).round().astype(np.int32)
    Image.fromarray(full).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    expect = np.rint(full / (2 ** 31 - 1) * 255)
    assert np.abs(grey_of(rgb(tmp_path / "i32.tif")).astype(int) - expect).max() <= 1
    Image.fromarray(RAMP16.astype(np.int32)).save(tmp_path / "i32_16.tif")
    with pytest.raises(InputError, match=r"fit in 16 bits \(97..65492\).*16-bit PNG/TIFF"):
        open_rgb(tmp_path / "i32_16.tif")
    Image.fromarray(full - 5).save(tmp_path / "neg.tif")
    with pytest.raises(InputError, match="negative values"):
        open_rgb(tmp_path / "neg.tif")


def test_palette_transparency_cmyk_and_8bit_modes(tmp_path):
    p = Image.new("P", (6, 4), 1)
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    p.putpixel((0, 0), 2)
    p.save(tmp_path / "pt.png", transparency=1)
    got = rgb(tmp_path / "pt.png")
    assert got[0, 0].tolist() == [0, 0, 255] and (got.reshape(-1, 3)[1:] == 255).all()  # transparent -> white
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(tmp_path / "cyan.tif")
    Image.new("CMYK", (4, 4), (0, 0, 0, 255)).save(tmp_path / "black.jpg")
    assert rgb(tmp_path / "cyan.tif")[0, 0].tolist() == [0, 255, 255]
    assert rgb(tmp_path / "black.jpg").max() <= 2
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 51                  # 20% opaque red over white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert rgb(tmp_path / "rgba.png")[0, 0].tolist() == [244, 204, 204]
    plain = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(plain).save(tmp_path / "plain.png")
    np.testing.assert_array_equal(rgb(tmp_path / "plain.png"), plain)   # 8-bit RGB is unchanged
    Image.fromarray(plain[..., 0]).convert("1").save(tmp_path / "bw.png")
    assert set(np.unique(rgb(tmp_path / "bw.png"))) <= {0, 255}


def test_datasets_decode_through_it(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(RAMP16).save(tmp_path / "imgs" / c / "x.png")
        Image.fromarray((RAMP16 / 65535).astype(np.float32)).save(tmp_path / "imgs" / c / "y.tif")
    ds = load_image_folder(tmp_path / "imgs")
    np.testing.assert_array_equal(grey_of(np.asarray(ds.image(0))), by257(RAMP16))
    assert grey_of(np.asarray(ds.image(1))).max() == 255
    pixels = np.stack([RAMP16, RAMP16[::-1]])              # in-memory 16-bit pixels, too
    mem = build_dataset("mem", ["p", "q"], ["", ""], ["a", "b"], pixels=pixels)
    np.testing.assert_array_equal(grey_of(np.asarray(mem.image(1))), by257(RAMP16[::-1]))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_explicit_and_names_its_setting(tmp_path, monkeypatch):
    Image.new("RGB", (200, 100)).save(tmp_path / "big.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "small.png")
    assert max_image_pixels() == 64_000_000
    monkeypatch.setenv(MAX_PIXELS_ENV, "10_000")
    assert open_rgb(tmp_path / "small.png").size == (50, 50)
    with pytest.raises(InputError, match=r"200 x 100 = 20,000 pixels is over the limit of 10,000.*"
                                         + MAX_PIXELS_ENV):
        open_rgb(tmp_path / "big.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_PIXELS_ENV} must be a whole number"):
        open_rgb(tmp_path / "small.png")


def write_bomb(path, side: int) -> Path:
    """A real decompression bomb: a side x side 8-bit grey PNG of zeros, a few hundred KB on disk."""
    packer, row = zlib.compressobj(9), b"\x00" * (side + 1)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return Path(path)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """12,000 x 12,000 = 144 Mpx: under PIL's own refusal (179 Mpx), over the explicit 64 Mpx limit."""
    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", 12_000)


_PEAK = """
import resource, sys, time
from selector.errors import InputError
from selector.images import open_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    open_rgb(sys.argv[1])
    print("decoded")
except InputError as e:
    print("refused", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, e)
"""


@pytest.mark.faults
def test_a_decompression_bomb_is_refused_from_its_header(bomb):
    assert bomb.stat().st_size < 1_000_000
    out = subprocess.run([sys.executable, "-c", _PEAK, str(bomb)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout
    verdict, seconds, grown_kb, message = out.split(" ", 3)
    assert verdict == "refused" and "144,000,000 pixels is over the limit of 64,000,000" in message and MAX_PIXELS_ENV in message
    assert float(seconds) < 0.5 and int(grown_kb) < 20_000   # decoding it would take 144 MB


TINY = "selector-tiny-images"
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.mark.faults
@pytest.mark.slow
def test_a_refused_image_is_skipped_counted_and_reported(bomb, tmp_path, caplog):
    import open_clip
    from selector.encoders.openclip import OpenCLIPEncoder
    from selector.pipeline import Config, run
    (tmp_path / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(tmp_path / f"{TINY}.json")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{k}.png")
    (tmp_path / "imgs" / "dog" / "zz_bomb.png").symlink_to(bomb)
    ds = load_image_folder(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING):
        result = run(ds, OpenCLIPEncoder(TINY, pretrained=None, num_workers=0), Config(map="none"),
                     cache_dir=tmp_path / "cache")
    assert result.manifest["inputs"]["skipped_unreadable"] == ["dog/zz_bomb.png"]
    assert result.manifest["counts"]["skipped"] == 1 and len(result.table) == 12
    assert "144,000,000 pixels is over the limit" in caplog.text
