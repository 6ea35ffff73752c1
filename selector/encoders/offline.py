"""The offline encoder for any images: features learned from the dataset's own images, without its labels.

No CLIP weights, no download, no labels: a single-layer unsupervised feature learner (Coates, Lee and Ng,
"An Analysis of Single-Layer Networks in Unsupervised Feature Learning", AISTATS 2011). Images are read at
28x28 greyscale (when every sampled image is greyscale) or 32x32 colour; on up to 10,000 of them (a seeded
sample) it learns

  1. the statistics of 6x6 patches (each patch brightness/contrast-normalised), and a ZCA whitening,
  2. 256 k-means centroids of 400,000 whitened patches,
  3. the mean and spread of the pooled features and their first 256 principal axes.

An image's embedding: every 6x6 patch (stride 1) is normalised, whitened and encoded against the
centroids with a soft threshold (max(0, <patch, centroid> - 0.25)); the codes are average-pooled over the
four quadrants (1,024 features), standardised and projected on the principal axes (d = 256).

Nothing saw a label, so no row is scored by a model that saw its label and no cross-fitting is needed;
the encoder has no text tower (`encode_classes` is None): the audit pools its label-based experts and class
prototypes stand in for prompts. The fitted parameters are cached per dataset content under
``cache_dir/offline_encoder/`` (written atomically, checked by their sha1 when read) and are a deterministic
function of the images, the seed and the recipe.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from selector.encoders.base import check_batch, encode_image_rows, transform_rows
from selector.errors import InputError
from selector.files import atomic_write_bytes, cache_problem, clear_way, unwritable
from selector.progress import Progress, ensure
from selector.runtime import n_threads, torch_threads

log = logging.getLogger(__name__)

RECIPE = {"version": 1, "patch": 6, "centroids": 256, "patches_per_image": 40, "fit_images": 10_000,
          "kmeans_iters": 15, "alpha": 0.25, "norm_eps": 10.0, "zca_eps": 0.1, "dim": 256,
          "grey_side": 28, "colour_side": 32}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class OfflineEncoder:
    """Encoder protocol, image tower only, fitted on the dataset it is asked to embed (once per dataset
    content; then from the cache). encode_images -> (m, d) float32 (d <= 256); encode_classes -> None."""
    cacheable = True
    text_tower = False

    def __init__(self, *, cache_dir, seed: int = 0, progress: Progress | None = None):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
        self.seed, self.progress = seed, ensure(progress)
        self.folder = Path(cache_dir).expanduser() / "offline_encoder"
        self.name = ("offline encoder (k-means patch features learned from these images, no labels; not CLIP)")
        self.cache_key = f"offline|{json.dumps(RECIPE, sort_keys=True)}|seed{seed}"
        self._fitted: dict[str, dict] = {}      # dataset content fingerprint -> fitted parameters

    # ------------------------------------------------------------------------------------------ protocol
    def encode_classes(self, dataset):
        """None: no text tower (nothing here has seen a class name or a label)."""
        return None

    def encode_images(self, dataset, rows, *, batch_size: int = 256, progress: Progress | None = None) -> np.ndarray:
        """(len(rows), d) float32 embeddings of dataset rows; NaN rows for undecodable images. The first call
        for a dataset learns the features from its images (or reads them from the cache)."""
        import torch
        batch_size = check_batch(batch_size)
        params = self.fit(dataset, progress=progress)
        rows = np.asarray(rows, dtype=np.int64)
        with torch_threads(n_threads()):
            pix = _pixel_array(dataset)
            if pix is not None:
                out = np.empty((len(rows), params["dim"]), dtype=np.float32)
                for s in range(0, len(rows), batch_size):
                    out[s:s + batch_size] = _embed(params, _pixels_to_input(pix[rows[s:s + batch_size]], params))
                    ensure(progress)("embedding images", min(s + batch_size, len(rows)), len(rows))
                return out
            transform = _transform(params)
            return encode_image_rows(dataset, rows, transform, lambda x: _embed(params, x), batch_size=batch_size,
                                     progress=progress)

    # ----------------------------------------------------------------------------------------------- fit
    def fit(self, dataset, progress: Progress | None = None) -> dict:
        """The fitted parameters for this dataset's images: from memory, the cache, or learned now (reported
        to progress, else to the encoder's own callback)."""
        content = getattr(dataset, "content_fingerprint", None) or dataset.fingerprint
        if content in self._fitted:
            return self._fitted[content]
        stem = hashlib.sha1(f"{content}\0{self.cache_key}".encode()).hexdigest()[:20]
        weights, meta = self.folder / f"{stem}.npz", self.folder / f"{stem}.json"
        params = _load(weights, meta)
        if params is None:
            import torch
            t0 = time.perf_counter()
            with torch_threads(n_threads()), torch.random.fork_rng(devices=[]):
                params, info = _fit(dataset, seed=self.seed, progress=progress or self.progress)
            info.update(seconds=round(time.perf_counter() - t0, 1), created=time.strftime("%Y-%m-%d %H:%M:%S"))
            _save(weights, meta, params, info)
            log.info("Learned the offline encoder from %d images in %.1f s", info["fit_images"], info["seconds"])
        self._fitted[content] = params
        return params


# ------------------------------------------------------------------------------------------------ images
def _pixel_array(dataset):
    """The dataset's in-memory (n, H, W) or (n, H, W, 3) uint8 pixels, or None (images are files)."""
    pix = getattr(dataset, "pixels", None)
    if pix is not None and pix.dtype == np.uint8 and (pix.ndim == 3 or (pix.ndim == 4 and pix.shape[3] == 3)):
        return pix
    return None


def _is_grey(image) -> bool:
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode in _GREY_MODES:
        return True
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _channels(dataset, rows) -> int:
    """1 when every image of rows is greyscale, else 3."""
    pix = _pixel_array(dataset)
    if pix is not None:
        return 1 if pix.ndim == 3 else 3
    for i in rows:
        try:
            if not _is_grey(dataset.image(int(i))):
                return 3
        except Exception:  # noqa: BLE001 - an undecodable image says nothing about the others
            continue
    return 1


def _transform(params):
    """PIL image -> (c, side, side) float32 tensor of 0..255 values."""
    import torch
    side, grey = params["side"], params["channels"] == 1

    def transform(image):
        im = image.convert("L" if grey else "RGB")
        if im.size != (side, side):
            im = im.resize((side, side), resample=2)    # bilinear
        arr = np.asarray(im, dtype=np.float32)
        return torch.from_numpy(arr[None] if grey else np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return transform


def _pixels_to_input(pix: np.ndarray, params):
    """(b, H, W[, 3]) uint8 -> (b, c, side, side) float32 tensor of 0..255 values."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(pix)).float()
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if params["channels"] == 1 and x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    elif params["channels"] == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    side = params["side"]
    if x.shape[2:] != (side, side):
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x.contiguous()


# ------------------------------------------------------------------------------------------- the features
def _patches(x, p: int, eps: float):
    """(b, c, s, s) -> (b, L, c*p*p) brightness/contrast-normalised patches at every position."""
    import torch
    P = torch.nn.functional.unfold(x, p).transpose(1, 2)
    P = P - P.mean(-1, keepdim=True)
    return P / torch.sqrt(P.var(-1, keepdim=True) + eps)


def _pooled_codes(params, x):
    """(b, c, s, s) -> (b, 4K) quadrant-pooled soft-threshold codes."""
    import torch
    P = _patches(x, RECIPE["patch"], RECIPE["norm_eps"])
    codes = torch.relu_(((P - params["t_mean"]) @ params["t_whiten"]) @ params["t_centroids"].T - RECIPE["alpha"])
    h = int(round(codes.shape[1] ** 0.5))
    codes = codes.transpose(1, 2).reshape(len(x), -1, h, h)
    return torch.nn.functional.adaptive_avg_pool2d(codes, 2).reshape(len(x), -1)


def _embed(params, x) -> np.ndarray:
    """(b, c, s, s) float tensor -> (b, d) float32 embeddings."""
    import torch
    with torch.inference_mode():
        f = (_pooled_codes(params, x.float()) - params["t_feat_mean"]) / params["t_feat_std"]
        return (f @ params["t_axes"].T).numpy().astype(np.float32)


def _fit(dataset, *, seed: int, progress: Progress) -> tuple[dict, dict]:
    """Learn the parameters on a seeded sample of the dataset's images -> (params, info)."""
    import torch
    n = len(dataset)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, RECIPE["fit_images"]), replace=False))
    channels = _channels(dataset, rows[:64])
    params = {"channels": channels, "side": RECIPE["grey_side"] if channels == 1 else RECIPE["colour_side"]}
    stage = "learning the offline encoder"
    progress(stage, 0, RECIPE["kmeans_iters"] + 2)
    pix = _pixel_array(dataset)
    if pix is not None:
        x = _pixels_to_input(pix[rows], params)
    else:
        xs, ok, _ = transform_rows(dataset, rows, _transform(params))
        x = torch.from_numpy(xs[ok])
    if len(x) < 2:
        raise InputError(f"the offline encoder needs at least 2 readable images to learn from; {len(x)} of the "
                         f"{len(rows)} sampled could be read. Check the image files.")
    gen = torch.Generator().manual_seed(seed)
    p, per = RECIPE["patch"], RECIPE["patches_per_image"]
    sample = []
    for s in range(0, len(x), 512):
        P = _patches(x[s:s + 512], p, RECIPE["norm_eps"])
        pick = torch.randint(0, P.shape[1], (len(P), per), generator=gen)
        sample.append(torch.gather(P, 1, pick[..., None].expand(-1, -1, P.shape[2])).reshape(-1, P.shape[2]))
    Z = torch.cat(sample).double()
    mean = Z.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov((Z - mean).T))
    whiten = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp(min=0) + RECIPE["zca_eps"])) @ evecs.T
    Z = ((Z - mean) @ whiten).float()
    progress(stage, 1, RECIPE["kmeans_iters"] + 2)
    centroids = _kmeans(Z, RECIPE["centroids"], RECIPE["kmeans_iters"], gen,
                        lambda it: progress(stage, 1 + it, RECIPE["kmeans_iters"] + 2))
    params.update(t_mean=mean.float(), t_whiten=whiten.float(),
                  t_centroids=torch.nn.functional.normalize(centroids, dim=1))
    with torch.inference_mode():
        F = torch.cat([_pooled_codes(params, x[s:s + 256]) for s in range(0, len(x), 256)]).double()
    feat_mean, feat_std = F.mean(0), F.std(0) + 1e-3
    _, _, vt = torch.linalg.svd((F - feat_mean) / feat_std, full_matrices=False)
    dim = int(min(RECIPE["dim"], vt.shape[0]))
    params.update(t_feat_mean=feat_mean.float(), t_feat_std=feat_std.float(), t_axes=vt[:dim].float().contiguous(),
                  dim=dim)
    progress(stage, RECIPE["kmeans_iters"] + 2, RECIPE["kmeans_iters"] + 2)
    info = {"recipe": RECIPE, "seed": seed, "fit_images": int(len(x)), "patches": int(len(Z)), "channels": channels,
            "side": params["side"], "dim": dim, "labels_used": False, "torch_threads": n_threads(),
            "torch": torch.__version__}
    return params, info


def _kmeans(Z, k: int, iters: int, gen, tick):
    """Lloyd's k-means on the rows of Z (float32), seeded; an empty cluster restarts at a random row."""
    import torch
    k = min(k, len(Z))
    centroids = Z[torch.randperm(len(Z), generator=gen)[:k]].clone()
    sq = (Z * Z).sum(1)
    for it in range(iters):
        assign = torch.empty(len(Z), dtype=torch.int64)
        for s in range(0, len(Z), 65536):
            block = Z[s:s + 65536]
            dist = sq[s:s + 65536, None] - 2 * block @ centroids.T + (centroids * centroids).sum(1)
            assign[s:s + 65536] = dist.argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, Z)
        counts = torch.bincount(assign, minlength=k)
        restart = Z[torch.randint(0, len(Z), (k,), generator=gen)]
        centroids = torch.where((counts == 0)[:, None], restart, sums / counts.clamp(min=1)[:, None].float())
        tick(it + 1)
    return centroids


# ------------------------------------------------------------------------------------------------- cache
def _save(weights: Path, meta: Path, params: dict, info: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in params.items()})
    data = buf.getvalue()
    info = dict(info, weights_sha1=hashlib.sha1(data).hexdigest())
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(clear_way(weights), data)
        atomic_write_bytes(clear_way(meta), json.dumps(info, indent=1).encode())
    except OSError as exc:
        cache_problem(unwritable("offline encoder", weights.parent, exc))


def _load(weights: Path, meta: Path) -> dict | None:
    import torch
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        data = weights.read_bytes()
        if info.get("weights_sha1") != hashlib.sha1(data).hexdigest():
            raise ValueError("its checksum does not match the json")
        with np.load(io.BytesIO(data)) as z:
            params = {k: (torch.from_numpy(z[k].copy()) if k.startswith("t_") else int(z[k])) for k in z.files}
    except Exception as e:  # noqa: BLE001 - any damage means "learn again"
        log.warning("Cached offline encoder %s is unusable (%s); learning it again.", weights, e)
        return None
    return params
