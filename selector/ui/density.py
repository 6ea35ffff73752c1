"""The map as a server-side density image of every point, and the rows inside a drawn box or lasso.

A scatter of 60k markers overplots (the trace drawn last covers the others, so a 20% minority can look
like most of the map), and a browser cannot take 1.28M. Instead every point lands in a pixel of a fixed
grid; a pixel's colour is the mean colour of its points (categories) or the colour of their mean value
(scores), and its opacity grows with the log of how many points it holds. A pixel of 10 flagged and 40
clean points is a fifth of the way from grey to red, whatever the drawing order. The image goes to the
browser as one PNG, the same size at 60k rows as at 1.28M. No streamlit here; unit-tested.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = (720, 520)          # (width, height) in pixels of the density image, from 60,000 points on
SPREAD_BELOW = 200_000     # fewer points than this: each one also colours its 8 neighbouring pixels
VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725")


@dataclass(frozen=True)
class Extent:
    """The data rectangle the image covers: [x0, x1] x [y0, y1], padded so no point sits on the border."""
    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def of(cls, xy: np.ndarray, pad: float = 0.02) -> "Extent":
        finite = xy[np.isfinite(xy).all(axis=1)]
        if len(finite) == 0:
            return cls(-1.0, 1.0, -1.0, 1.0)
        lo, hi = finite.min(axis=0).astype(float), finite.max(axis=0).astype(float)
        span = np.maximum(hi - lo, 1e-9)
        lo, hi = lo - pad * span, hi + pad * span
        return cls(lo[0], hi[0], lo[1], hi[1])


def grid_for(n: int) -> tuple[int, int]:
    """A coarser grid for fewer points, so that a few hundred still show as dots rather than specks:
    about 3 x sqrt(n) pixels across, between 160 and GRID's width."""
    w = int(np.clip(round(3 * np.sqrt(max(n, 1))), 160, GRID[0]))
    return w, round(w * GRID[1] / GRID[0])


def hex_rgb(colours) -> np.ndarray:
    """(k, 3) float32 in [0, 1] of '#rrggbb' strings."""
    return np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in colours], dtype=np.float32)


def colour_scale(values: np.ndarray, stops=VIRIDIS) -> np.ndarray:
    """(n, 3) float32: values in [0, 1] (clipped; NaN as 0) mapped through the piecewise-linear scale."""
    rgb = hex_rgb(stops)
    t = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0, 1) * (len(stops) - 1)
    lo = np.minimum(t.astype(np.int64), len(stops) - 2)
    frac = (t - lo)[:, None]
    return rgb[lo] * (1 - frac) + rgb[lo + 1] * frac


def pixel_of(xy: np.ndarray, extent: Extent, grid=GRID) -> np.ndarray:
    """(n,) int64 flat pixel index (row 0 at the top) of each point; -1 for a non-finite point."""
    w, h = grid
    col = (xy[:, 0] - np.float32(extent.x0)) * np.float32(w / (extent.x1 - extent.x0))
    row = (np.float32(extent.y1) - xy[:, 1]) * np.float32(h / (extent.y1 - extent.y0))
    ok = np.isfinite(col) & np.isfinite(row)
    col = np.clip(np.where(ok, col, 0), 0, w - 1).astype(np.int64)
    row = np.clip(np.where(ok, row, 0), 0, h - 1).astype(np.int64)
    pixels = row * w + col
    pixels[~ok] = -1
    return pixels


def _sums(pixels: np.ndarray, weights, size: int, shape) -> np.ndarray:
    ok = pixels >= 0
    return np.bincount(pixels[ok], weights=None if weights is None else weights[ok], minlength=size).reshape(shape)


def _spread(a: np.ndarray) -> np.ndarray:
    """Each pixel plus its 8 neighbours (a 3x3 box sum, zero outside the image)."""
    p = np.pad(a, 1)
    return sum(p[1 + dy: p.shape[0] - 1 + dy, 1 + dx: p.shape[1] - 1 + dx]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def density_rgba(xy: np.ndarray, extent: Extent, *, rgb: np.ndarray | None = None,
                 values: np.ndarray | None = None, grid=None, spread: bool | None = None) -> np.ndarray:
    """(h, w, 4) uint8 image of the points: give `rgb` (n, 3) for categories (mean colour per pixel) or
    `values` (n,) in [0, 1] for a score (VIRIDIS of the mean value per pixel). Empty pixels are transparent.
    grid: (w, h), by default grid_for(n)."""
    if (rgb is None) == (values is None):
        raise ValueError("give exactly one of rgb or values")
    grid = grid_for(len(xy)) if grid is None else grid
    w, h = grid
    pixels = pixel_of(np.asarray(xy, dtype=np.float32), extent, grid)
    spread = len(pixels) < SPREAD_BELOW if spread is None else spread
    blur = _spread if spread else (lambda a: a)
    count = blur(_sums(pixels, None, w * h, (h, w)))
    if values is not None:
        v = np.nan_to_num(np.asarray(values, dtype=np.float64))
        mean = blur(_sums(pixels, v, w * h, (h, w))) / np.maximum(count, 1)
        colour = colour_scale(mean.ravel()).reshape(h, w, 3)
    else:
        colour = np.stack([blur(_sums(pixels, rgb[:, c].astype(np.float64), w * h, (h, w)))
                           for c in range(3)], axis=-1) / np.maximum(count, 1)[..., None]
    alpha = np.where(count > 0, 0.35 + 0.65 * np.log1p(count) / np.log1p(max(count.max(), 1)), 0.0)
    return (np.dstack([colour, alpha]) * 255).round().clip(0, 255).astype(np.uint8)


def png_data_uri(rgba: np.ndarray) -> str:
    """The image as a data: URI (what plotly's layout images take)."""
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=False, compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- rows inside a region
def _in_polygon(xy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """(n,) bool: even-odd rule, one vectorised pass per polygon edge."""
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    for i in range(len(px)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        inside ^= crosses & (x < x1 + (y - y1) * (x2 - x1) / (y2 - y1))
    return inside


def rows_in_region(xy: np.ndarray, selection) -> np.ndarray | None:
    """Sorted rows of every point inside the boxes and lassos of a plotly selection event (all rows of
    `xy`, not only the ones drawn as markers); None when the event holds no box or lasso."""
    if not selection:
        return None
    boxes, lassos = selection.get("box") or [], selection.get("lasso") or []
    if not boxes and not lassos:
        return None
    xy = np.asarray(xy, dtype=np.float64)
    inside = np.zeros(len(xy), dtype=bool)
    for box in boxes:
        (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
        inside |= (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    for lasso in lassos:
        px, py = np.asarray(lasso["x"], dtype=np.float64), np.asarray(lasso["y"], dtype=np.float64)
        if len(px) < 3:
            continue
        box = (xy[:, 0] >= px.min()) & (xy[:, 0] <= px.max()) & (xy[:, 1] >= py.min()) & (xy[:, 1] <= py.max())
        cand = np.flatnonzero(box)
        inside[cand[_in_polygon(xy[cand], px, py)]] = True
    return np.flatnonzero(inside)
