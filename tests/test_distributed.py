"""Embedding on Ray (a local 2-CPU cluster, no GPU): the cache it writes is the one embed_dataset reads, a killed
worker or a stopped job costs only the chunks not yet written, and a missing Ray says how to install it."""
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selector.dataset import Dataset
from selector.embed import embed_dataset
from selector.encoders import open_encoder
from selector.errors import InputError
from selector.sources import load_image_folder
from tests.test_embed import TINY_CFG, Counting

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'selector[ray]'")
pytestmark = pytest.mark.slow

BATCH, CHUNK = 8, 16


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    """The tiny random-init CLIP as a 'local-dir:' model, the form every Ray worker can load by name."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    return {"model": f"local-dir:{folder}"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Dataset:
    """45 generated PNGs of varied sizes in 3 classes, and one file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir()
        for k in range(15):
            Image.fromarray(rng.integers(0, 255, (20 + k, 24 + 2 * k, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    (root / "owl" / "broken.png").write_bytes(b"not a png")
    return load_image_folder(root)


@pytest.fixture(scope="module")
def local(images, model, tmp_path_factory):
    """The single-process result: (encoder, X, T, ok)."""
    encoder = open_encoder("open_clip", **model)
    X, T, ok = embed_dataset(images, encoder, cache_dir=tmp_path_factory.mktemp("local"), batch_size=BATCH,
                             chunk_size=CHUNK)
    assert (~ok).sum() == 1
    return encoder, X, T, ok


def _on_ray(images, model, cache_dir, progress=None):
    from selector.distributed import embed_on_ray
    return embed_on_ray(images, "open_clip", model, cache_dir=cache_dir, batch_size=BATCH, chunk_size=CHUNK,
                        progress=progress)


def _assert_cache_is_the_local_one(images, local, cache_dir):
    encoder, X, T, ok = local
    counting = Counting(encoder)
    X2, T2, ok2 = embed_dataset(images, counting, cache_dir=cache_dir, batch_size=BATCH, chunk_size=CHUNK)
    assert counting.rows == 0 and counting.text_calls == 0     # every chunk and the prompts were cached
    np.testing.assert_allclose(X2, X, rtol=0, atol=1e-5)        # NaN where the image is broken, in both
    np.testing.assert_allclose(T2, T, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ok2, ok)


def test_ray_writes_the_cache_embed_dataset_reads(cluster, images, model, local, tmp_path):
    reports = []
    cached = _on_ray(images, model, tmp_path, progress=lambda *a: reports.append(a))
    assert cached.cache_key == local[0].cache_key and cached.name == local[0].name
    _assert_cache_is_the_local_one(images, local, tmp_path)
    X, _, ok = embed_dataset(images, cached, cache_dir=tmp_path, batch_size=BATCH, chunk_size=CHUNK)
    assert ok.sum() == len(images) - 1
    done = [d for stage, d, total in reports if stage == "embedding images"]
    assert done[0] == 0 and done[-1] == len(images) and done == sorted(done)
    # a second job finds everything cached and submits nothing
    again = []
    _on_ray(images, model, tmp_path, progress=lambda *a: again.append(a))
    assert [r for r in again if r[0] == "embedding images"] == [("embedding images", len(images), len(images))]


def _first(marker: str) -> bool:
    """True for the one process, of all, that creates the marker file."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def _kill_model_actors() -> list[int]:
    """SIGKILL every live Ray worker process that holds the model; their pids."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"MapWorker(MapBatches(_ModelActor))" in cmdline:
            os.kill(int(proc.name), signal.SIGKILL)
            pids.append(int(proc.name))
    return pids


class FaultyDecoding(Dataset):
    """Kills Ray worker processes mid-job, once each (marker files in `folder`): the first image decoded kills the
    worker decoding it (os._exit, like a crash or the OOM killer); decoding the last image waits until a first
    chunk is cached, then SIGKILLs the model actor, which still owes at least the last rows."""
    folder: str = ""

    def image(self, i):
        if _first(f"{self.folder}/decoder_died"):
            os._exit(1)
        if i == len(self) - 1 and _first(f"{self.folder}/actor_killed"):
            deadline = time.monotonic() + 60
            while not glob.glob(f"{self.folder}/cache/embeddings/*/chunk_*.npy") and time.monotonic() < deadline:
                time.sleep(0.05)
            Path(f"{self.folder}/actor_killed").write_text(" ".join(map(str, _kill_model_actors())))
        return super().image(i)


def test_killed_workers_are_replaced_and_the_job_completes(cluster, images, model, local, tmp_path):
    import cloudpickle
    import tests.test_distributed as this
    cloudpickle.register_pickle_by_value(this)  # the Ray workers need not import the tests package
    try:
        faulty = FaultyDecoding(**{f: getattr(images, f) for f in ("name", "table", "class_names", "labels")})
        faulty.folder = str(tmp_path)
        _on_ray(faulty, model, tmp_path / "cache")
    finally:
        cloudpickle.unregister_pickle_by_value(this)
    assert (tmp_path / "decoder_died").exists()                  # a decoding worker died on its first image
    assert (tmp_path / "actor_killed").read_text().strip()       # and the model actor in the middle of the job
    _assert_cache_is_the_local_one(images, local, tmp_path / "cache")


class StopJob(Exception):
    pass


def test_a_stopped_job_resumes_with_the_missing_chunks_only(cluster, images, model, local, tmp_path):
    def stop_after_first_chunk(stage, done, total):
        if stage == "embedding images" and done >= CHUNK:
            raise StopJob
    with pytest.raises(StopJob):
        _on_ray(images, model, tmp_path, progress=stop_after_first_chunk)
    written = len(list(tmp_path.glob("embeddings/*/chunk_*.npy")))
    assert 1 <= written < 3                                      # 46 rows in chunks of 16: 3 chunks
    reports = []
    _on_ray(images, model, tmp_path, progress=lambda *a: reports.append(a))
    done = [d for stage, d, total in reports if stage == "embedding images"]
    assert done[0] == written * CHUNK and done[-1] == len(images)   # only the rows of missing chunks were sent
    _assert_cache_is_the_local_one(images, local, tmp_path)


def test_a_worker_input_error_is_raised_as_itself(cluster, images, tmp_path):
    with pytest.raises(InputError, match="open_clip_config.json") as err:
        _on_ray(images, {"model": f"local-dir:{tmp_path}"}, tmp_path)
    assert not isinstance(err.value, ray.exceptions.RayError)
    with pytest.raises(InputError, match="takes no option"):
        _on_ray(images, {"temperature": 3}, tmp_path)


def test_without_ray_the_error_says_how_to_install_it(images, tmp_path, monkeypatch):
    from selector.distributed import embed_on_ray
    monkeypatch.setitem(sys.modules, "ray", None)                # `import ray` now fails as if not installed
    with pytest.raises(InputError, match=r"pip install 'selector\[ray\]'"):
        embed_on_ray(images, "open_clip", cache_dir=tmp_path)


def test_importing_selector_and_its_cli_never_imports_ray():
    code = ("import sys, selector, selector.__main__, selector.distributed\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_cli_embeds_on_ray_and_runs_the_rest_from_the_cache(cluster, images, model, tmp_path, capsys):
    from selector.__main__ import main
    folder = Path(images.table["path"].iloc[0]).parents[1]
    args = ["--source", "image-folder", "--path", str(folder), "--encoder", "open_clip", "--model", model["model"],
            "--map", "none", "--batch-size", str(BATCH), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--ray", "--ray-workers", "1", "--out", str(tmp_path / "ray.csv")]) == 0
    assert "45 samples" in capsys.readouterr().out               # the broken file is skipped, as without Ray
    assert main([*args, "--out", str(tmp_path / "here.csv")]) == 0  # the same run here: read from the caches
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "here.csv").read_bytes()


def test_a_query_set_searched_by_ray_tasks_equals_a_local_search(cluster):
    import faiss
    from selector.distributed import search_on_ray
    rng = np.random.default_rng(0)
    data, queries = rng.normal(size=(3000, 24)).astype(np.float32), rng.normal(size=(301, 24)).astype(np.float32)
    flat = faiss.IndexFlatIP(24)
    flat.add(data)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(24), 24, 16)
    ivf.train(data)
    ivf.add(data)
    ivf.nprobe = 4
    for index in (flat, ivf):
        D, I = index.search(queries, 7)
        D2, I2 = search_on_ray(index, queries, 7, tasks=3)
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_allclose(D2, D, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"\(m, 24\)"):
        search_on_ray(flat, queries[:, :5], 7)
