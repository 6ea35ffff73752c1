"""The map's density image and region picking (selector/ui/density.py): every point drawn, colours mixed in
proportion whatever the drawing order, and a box or lasso picking exactly the points inside."""
import numpy as np
import pytest

from selector.ui import density

GREY, RED = density.hex_rgb(["#b0b8c4", "#d62728"])
EXTENT = density.Extent(0.0, 1.0, 0.0, 1.0)


def _pixel(image, x, y, grid=density.GRID):
    w, h = grid
    return image[int((1 - y) * h), int(x * w)]


def test_a_pixel_mixes_its_points_in_proportion_whatever_the_order():
    xy = np.full((50, 2), 0.5)
    flagged = np.zeros(50, dtype=int)
    flagged[:10] = 1                                   # 10 flagged, 40 clean in one pixel
    colours = np.stack([GREY, RED])
    a = density.density_rgba(xy, EXTENT, rgb=colours[flagged], grid=density.GRID, spread=False)
    b = density.density_rgba(xy[::-1], EXTENT, rgb=colours[flagged[::-1]], grid=density.GRID, spread=False)
    assert np.array_equal(a, b)
    expected = np.round((0.8 * GREY + 0.2 * RED) * 255)
    assert np.abs(_pixel(a, 0.5, 0.5)[:3].astype(float) - expected).max() <= 1


def test_every_point_is_drawn_and_empty_pixels_are_transparent():
    rng = np.random.default_rng(0)
    xy = rng.random((500, 2)) * 0.98 + 0.01
    image = density.density_rgba(xy, EXTENT, rgb=np.tile(RED, (500, 1)), grid=density.GRID, spread=False)
    occupied = set(density.pixel_of(xy.astype(np.float32), EXTENT).tolist())
    lit = set((np.flatnonzero(image[..., 3].ravel() > 0)).tolist())
    assert lit == occupied
    assert image[..., 3].max() == 255 and image[..., 3][image[..., 3] > 0].min() >= 0.35 * 255 - 1
    spread = density.density_rgba(xy, EXTENT, rgb=np.tile(RED, (500, 1)), grid=density.GRID, spread=True)
    assert (spread[..., 3] > 0).sum() > len(lit)           # small sets: each point also lights its neighbours


def test_scores_are_averaged_per_pixel_then_coloured():
    xy = np.array([[0.25, 0.25], [0.25, 0.25], [0.75, 0.75]])
    image = density.density_rgba(xy, EXTENT, values=np.array([0.0, 1.0, 1.0]), grid=density.GRID, spread=False)
    mid = np.round(density.colour_scale(np.array([0.5]))[0] * 255)
    top = np.round(density.hex_rgb([density.VIRIDIS[-1]])[0] * 255)
    assert np.abs(_pixel(image, 0.25, 0.25)[:3] - mid).max() <= 1
    assert np.abs(_pixel(image, 0.75, 0.75)[:3] - top).max() <= 1


def test_fewer_points_get_a_coarser_grid():
    assert density.grid_for(240) == (160, 116) and density.grid_for(60_000) == density.GRID
    assert density.grid_for(1_280_000) == density.GRID
    assert density.density_rgba(np.array([[0.5, 0.5]] * 240), EXTENT, rgb=np.tile(RED, (240, 1))).shape == (116, 160, 4)


def test_non_finite_points_are_left_out():
    xy = np.array([[0.5, 0.5], [np.nan, 0.2], [np.inf, 0.1]])
    assert density.pixel_of(xy.astype(np.float32), EXTENT)[1:].tolist() == [-1, -1]
    image = density.density_rgba(xy, EXTENT, rgb=np.tile(RED, (3, 1)), grid=density.GRID, spread=False)
    assert (image[..., 3] > 0).sum() == 1
    assert density.Extent.of(xy).x1 < 1.0


def test_the_image_is_a_png_data_uri():
    image = density.density_rgba(np.array([[0.5, 0.5]]), EXTENT, rgb=RED[None])
    uri = density.png_data_uri(image)
    assert uri.startswith("data:image/png;base64,")
    import base64, io
    from PIL import Image
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert np.array_equal(back, image)


def test_box_and_lasso_pick_exactly_the_points_inside():
    rng = np.random.default_rng(1)
    xy = rng.random((20_000, 2)) * 10
    assert density.rows_in_region(xy, None) is None
    assert density.rows_in_region(xy, {"points": [], "box": [], "lasso": []}) is None
    box = density.rows_in_region(xy, {"box": [{"x": [6, 2], "y": [1, 3]}]})
    inside = (xy[:, 0] >= 2) & (xy[:, 0] <= 6) & (xy[:, 1] >= 1) & (xy[:, 1] <= 3)
    assert box.tolist() == np.flatnonzero(inside).tolist()
    # a concave "L": the square [0, 4]^2 without its top-right quarter [2, 4] x [2, 4]
    lasso = {"lasso": [{"x": [0, 4, 4, 2, 2, 0], "y": [0, 0, 2, 2, 4, 4]}]}
    rows = density.rows_in_region(xy, lasso)
    in_l = (xy < 4).all(axis=1) & ~((xy[:, 0] > 2) & (xy[:, 1] > 2))
    assert rows.tolist() == np.flatnonzero(in_l).tolist()
    both = density.rows_in_region(xy, {"box": [{"x": [6, 2], "y": [1, 3]}], **lasso})
    assert set(both.tolist()) == set(rows.tolist()) | set(box.tolist())


@pytest.mark.parametrize("bad", [{"lasso": [{"x": [1, 2], "y": [1, 2]}]}])
def test_a_degenerate_lasso_picks_nothing(bad):
    assert density.rows_in_region(np.random.default_rng(0).random((10, 2)), bad).tolist() == []
