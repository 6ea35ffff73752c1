"""Fault injection on the caches, with real faults: every cache file truncated, bit-flipped and replaced by junk,
folders and symlink loops where files should be, an edited meta.json, a read-only cache, a full disk on a small
tmpfs, and image files swapped behind the cache's back. Each must give the same table as an undamaged run, or
run on uncached with a warning; never a traceback, never a valid cache lost."""
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from selector import pipeline
from selector.embed import embed_dataset
from selector.encoders import open_encoder
from selector.encoders.precomputed import PrecomputedEncoder
from selector.files import read_sealed_json, sealed_json
from selector.sources import load_embeddings, load_image_folder
from tests.faults import DAMAGES, copy_tree, damage, fill_disk, image_folder, read_only, small_disk, tiny_clip_folder
from tests.synthetic import make_embeddings
from tests.test_embed import Counting

pytestmark = pytest.mark.faults

CONFIG = pipeline.Config(map="pca", noise_mode="uniform", noise_rate=0.2)
CHUNK = 16


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    """A small embeddings dataset, its uninterrupted result, and a cache folder holding that result."""
    tmp = tmp_path_factory.mktemp("faults_emb")
    npz = make_embeddings(tmp / "emb.npz", n_per_class=30)
    dataset = load_embeddings(npz)
    cache = tmp / "cache"
    reference = pipeline.load_or_run(dataset, PrecomputedEncoder(), CONFIG, cache_dir=cache)
    return {"dataset": dataset, "cache": cache, "reference": reference, "npz": str(npz)}


def _result_folder(cache):
    folders = [p for p in (cache / "results").iterdir() if not p.name.startswith(".") and p.suffix != ".stages"]
    assert len(folders) == 1, folders
    return folders[0]


def _rerun(emb, cache):
    return pipeline.load_or_run(emb["dataset"], PrecomputedEncoder(), CONFIG, cache_dir=cache)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ["table.parquet", "F.npy", "D.npy", "I.npy", "arrays.npz", "meta.json"])
def test_a_damaged_result_cache_file_is_found_and_the_run_computed_again(emb, tmp_path, caplog, name, how):
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    damage(_result_folder(cache) / name, how)
    with caplog.at_level(logging.WARNING):
        again = _rerun(emb, cache)
    assert "is damaged" in caplog.text and name.split(".")[0] in caplog.text
    assert again.timings != emb["reference"].timings                  # computed again, not read
    pd.testing.assert_frame_equal(again.table, emb["reference"].table)
    caplog.clear()
    reopened = _rerun(emb, cache)                                      # and the cache is whole again
    assert reopened.timings == again.timings and "damaged" not in caplog.text
    assert not [p for p in (cache / "results").iterdir() if p.name.startswith(".")]   # no half folders left


@pytest.mark.parametrize("how", DAMAGES + ("other parameters",))
def test_a_kept_view_is_read_back_only_whole_and_made_with_the_same_parameters(emb, tmp_path, caplog, how):
    from selector import results
    from selector.ui.subsets import CoverageSpace, coverage_space
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    folder, params = _result_folder(cache), dict(dims=4, n_probe=20, seed=0)
    view = coverage_space(emb["reference"].F, **params)
    assert results.save_view(folder, "coverage", view, params)
    back = results.load_view(folder, "coverage", CoverageSpace, params)
    for name in ("Z", "probe", "near", "near_d"):
        np.testing.assert_array_equal(getattr(back, name), getattr(view, name))
    assert back.pool is None and view.pool is None                      # a None field stays None
    if how == "other parameters":
        assert results.load_view(folder, "coverage", CoverageSpace, dict(params, dims=5)) is None
        return
    damage(folder / results.VIEWS / "coverage.npz", how)
    with caplog.at_level(logging.WARNING):
        assert results.load_view(folder, "coverage", CoverageSpace, params) is None
    assert "coverage" in caplog.text and "damaged" in caplog.text
    assert _rerun(emb, cache).timings == emb["reference"].timings        # the run itself is still read, not redone


def test_a_kept_view_removed_while_it_is_read_is_no_warning(emb, tmp_path, caplog, monkeypatch):
    """The run was computed again and swapped in by another process (its views go with the old folder) while this
    one read a kept view: there is simply no view, and no warning that it is damaged."""
    from selector import results
    from selector.ui.subsets import CoverageSpace, coverage_space
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    folder, params = _result_folder(cache), dict(dims=4, n_probe=20, seed=0)
    assert results.save_view(folder, "coverage", coverage_space(emb["reference"].F, **params), params)
    real_check = results.check_file

    def removed_meanwhile(path, record):
        shutil.rmtree(folder / results.VIEWS)
        return real_check(path, record)
    monkeypatch.setattr(results, "check_file", removed_meanwhile)
    with caplog.at_level(logging.INFO):
        assert results.load_view(folder, "coverage", CoverageSpace, params) is None
    assert "removed while it was read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_view_is_kept_only_beside_a_finished_result(tmp_path):
    from selector import results
    from selector.ui.subsets import ProbeSpace
    view = ProbeSpace(Z=np.ones((3, 2), np.float32), held_out=np.arange(1), trainable=np.ones(3, bool))
    assert not results.save_view(tmp_path / "no-result", "probe", view, {})
    assert not (tmp_path / "no-result").exists()
    assert results.load_view(tmp_path / "no-result", "probe", ProbeSpace, {}) is None


def test_an_edited_number_in_the_result_meta_is_found(emb, tmp_path, caplog):
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    meta = _result_folder(cache) / "meta.json"
    text = meta.read_text()
    meta.write_text(re.sub(r'"flag_threshold": [-0-9.e]+', '"flag_threshold": 0.123', text, count=1))
    assert meta.read_text() != text
    with caplog.at_level(logging.WARNING):
        again = _rerun(emb, cache)
    assert "changed after it was written" in caplog.text
    assert again.flag_threshold == emb["reference"].flag_threshold


@pytest.mark.parametrize("what", ["folder", "symlink loop"])
def test_a_folder_or_a_symlink_loop_in_place_of_a_result_file_or_folder(emb, tmp_path, what):
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    folder = _result_folder(cache)
    target = folder / "table.parquet"
    target.unlink()
    if what == "folder":
        (target / "inside").mkdir(parents=True)
    else:
        target.symlink_to(target)
    pd.testing.assert_frame_equal(_rerun(emb, cache).table, emb["reference"].table)
    shutil.rmtree(folder)
    folder.symlink_to(folder)                                          # the whole result folder a loop
    pd.testing.assert_frame_equal(_rerun(emb, cache).table, emb["reference"].table)
    assert folder.is_dir() and not folder.is_symlink()                 # replaced by a real result


def test_results_being_a_file_runs_uncached_with_a_warning(emb, tmp_path, caplog):
    from selector.__main__ import main
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "results").write_text("not a folder")
    result = pipeline.load_or_run(emb["dataset"], PrecomputedEncoder(), CONFIG, cache_dir=cache)
    pd.testing.assert_frame_equal(result.table, emb["reference"].table)
    (warning,) = result.cache_warnings
    assert "cannot write the result cache" in warning and f"{cache / 'results'} is a file, not a folder" in warning
    assert (cache / "results").read_text() == "not a folder"          # a user's file is never removed
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code = main(["--source", "embeddings", "--path", emb["npz"], "--map", "pca", "--noise-mode", "uniform",
                     "--cache-dir", str(cache), "--out", str(tmp_path / "o.csv")])
    assert code == 0 and "cannot write the result cache" in caplog.text


# ------------------------------------------------------------------------------ the embedding cache
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The tiny CLIP (a local-dir: model), 48 images in 3 classes, and their embeddings cached in 3 chunks."""
    tmp = tmp_path_factory.mktemp("faults_clip")
    encoder = open_encoder("open_clip", model=tiny_clip_folder(tmp / "model"))
    dataset = load_image_folder(image_folder(tmp / "images"))
    cache = tmp / "cache"
    X, T, ok = embed_dataset(dataset, encoder, cache_dir=cache, batch_size=8, chunk_size=CHUNK)
    assert ok.all()
    return {"encoder": encoder, "dataset": dataset, "cache": cache, "X": X, "T": T, "tmp": tmp}


def _embedding_folder(cache):
    (folder,) = list((cache / "embeddings").iterdir())
    return folder


def _embed_again(clip, cache, **kw):
    counting = Counting(clip["encoder"])
    X, T, ok = embed_dataset(clip["dataset"], counting, cache_dir=cache, batch_size=8, chunk_size=CHUNK, **kw)
    np.testing.assert_allclose(X, clip["X"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(T, clip["T"], rtol=0, atol=1e-6)
    return counting


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name,rows,texts", [("chunk_000001_*", CHUNK, 0), ("text_*", 0, 1), ("meta.json", 0, 0)])
def test_a_damaged_embedding_cache_file_is_found_and_only_it_is_recomputed(clip, tmp_path, caplog, name, rows,
                                                                           texts, how):
    cache = copy_tree(clip["cache"], tmp_path / "cache")
    (path,) = list(_embedding_folder(cache).glob(name))
    damage(path, how)
    with caplog.at_level(logging.WARNING):
        counting = _embed_again(clip, cache)
    assert (counting.rows, counting.text_calls) == (rows, texts)
    assert "corrupt" in caplog.text or "cannot be trusted" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _embed_again(clip, cache).rows == 0                     # whole again
    assert not caplog.text


@pytest.mark.parametrize("edit", ["d", "chunk_size", "n", "version"])
def test_an_edited_number_in_the_embedding_meta_rebuilds_it_with_a_warning(clip, tmp_path, caplog, edit):
    """Changed by hand (seal broken) or rewritten with a valid seal: never a permanent error."""
    cache = copy_tree(clip["cache"], tmp_path / "cache")
    meta_path = _embedding_folder(cache) / "meta.json"
    meta = read_sealed_json(meta_path)
    meta_path.write_text(meta_path.read_text().replace(f'"{edit}": {meta[edit]}', f'"{edit}": {meta[edit] + 7}'))
    with caplog.at_level(logging.WARNING):
        assert _embed_again(clip, cache).rows == 0
    assert "meta.json cannot be trusted" in caplog.text
    meta[edit] += 7                                                    # the same edit, with a valid seal
    meta_path.write_bytes(sealed_json(meta))
    _embed_again(clip, cache)
    assert _embed_again(clip, cache).rows == 0


@pytest.mark.parametrize("what", ["folder", "symlink loop", "pipe", "the cache folder a symlink loop"])
def test_a_folder_or_symlink_loop_where_an_embedding_file_should_be(clip, tmp_path, what):
    cache = copy_tree(clip["cache"], tmp_path / "cache")
    folder = _embedding_folder(cache)
    (chunk,) = list(folder.glob("chunk_000002_*"))
    if what == "folder":
        chunk.unlink()
        (chunk / "x").mkdir(parents=True)
        assert _embed_again(clip, cache).rows == CHUNK
    elif what == "symlink loop":
        chunk.unlink()
        chunk.symlink_to(chunk)
        assert _embed_again(clip, cache).rows == CHUNK
    elif what == "pipe":                                               # reading one would wait forever
        chunk.unlink()
        os.mkfifo(chunk)
        meta = folder / "meta.json"
        meta.unlink()
        os.mkfifo(meta)
        assert _embed_again(clip, cache).rows == CHUNK
    else:
        shutil.rmtree(folder)
        folder.symlink_to(folder)
        assert _embed_again(clip, cache).rows == 3 * CHUNK
    assert _embed_again(clip, cache).rows == 0


# ------------------------------------------------------------------------------ unwritable caches
@pytest.mark.slow
def test_a_read_only_cache_is_read_and_an_empty_read_only_one_runs_uncached(clip, emb, tmp_path):
    full = copy_tree(clip["cache"], tmp_path / "full")
    with read_only(full):
        with pytest.raises(OSError):
            (full / "probe").write_text("x")
        assert _embed_again(clip, full).rows == 0                      # read, nothing written, no warning
    empty = tmp_path / "empty"
    with read_only(empty):
        result = pipeline.load_or_run(emb["dataset"], PrecomputedEncoder(), CONFIG, cache_dir=empty)
        pd.testing.assert_frame_equal(result.table, emb["reference"].table)
        assert any("cannot write the result cache" in w and "make it writable" in w for w in result.cache_warnings)
        counting = Counting(clip["encoder"])
        embed_dataset(clip["dataset"], counting, cache_dir=empty, batch_size=8, chunk_size=CHUNK)
        assert counting.rows == 48
        cli = subprocess.run([sys.executable, "-m", "selector", "--source", "embeddings", "--path", emb["npz"],
                              "--map", "pca", "--cache-dir", str(empty), "--out", str(tmp_path / "out.csv")],
                             capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "WARNING cannot write the result cache" in cli.stderr and "Traceback" not in cli.stderr
    assert not list(empty.iterdir())


def test_a_full_disk_never_costs_a_valid_cache(clip, tmp_path):
    """On a full tmpfs: a valid result and embedding cache are re-opened (nothing is written, nothing deleted); a
    new run goes on uncached with a warning and leaves no half-written files."""
    config = pipeline.Config(map="pca")
    with small_disk(tmp_path / "disk", "4m") as disk:
        cache = disk / "cache"
        first = pipeline.load_or_run(clip["dataset"], clip["encoder"], config, cache_dir=cache)
        assert not first.cache_warnings
        before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
        filler = fill_disk(disk)
        again = pipeline.load_or_run(clip["dataset"], clip["encoder"], config, cache_dir=cache)
        assert again.timings == first.timings and not again.cache_warnings
        assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
        other = pipeline.load_or_run(clip["dataset"], clip["encoder"], pipeline.Config(map="pca", seed=1),
                                     cache_dir=cache)
        assert any("No space left" in w and "free some space" in w for w in other.cache_warnings)
        assert sorted(p.relative_to(cache) for p in cache.rglob("*") if ".stages" not in str(p)) == before
        filler.unlink()
        assert pipeline.load_or_run(clip["dataset"], clip["encoder"], config, cache_dir=cache).timings == first.timings


# ------------------------------------------------------------------------------ swapped image files
def test_a_same_size_image_swapped_in_with_its_mtime_restored_needs_verify_content(clip, tmp_path):
    root = image_folder(tmp_path / "bmp", per_class=8, suffix=".bmp")
    first = load_image_folder(root)
    cache = tmp_path / "cache"
    encoder = clip["encoder"]
    X0, _, _ = embed_dataset(first, encoder, cache_dir=cache, batch_size=8, chunk_size=8)
    result0 = pipeline.load_or_run(first, encoder, pipeline.Config(map="pca", verify_content=True), cache_dir=cache)
    victim = root / "dog" / "003.bmp"
    stat = victim.stat()
    image_folder(tmp_path / "other", per_class=8, suffix=".bmp", seed=5)
    shutil.copyfile(tmp_path / "other" / "dog" / "003.bmp", victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim.stat().st_size == stat.st_size and victim.stat().st_mtime_ns == stat.st_mtime_ns
    row = first.table["id"].tolist().index("dog/003.bmp")

    swapped = load_image_folder(root)
    stale = Counting(encoder)
    X1, _, _ = embed_dataset(swapped, stale, cache_dir=cache, batch_size=8, chunk_size=8)
    assert stale.rows == 0 and np.array_equal(X1[row], X0[row])       # size + mtime cannot see the swap

    checked = Counting(encoder)
    X2, _, _ = embed_dataset(swapped, checked, cache_dir=cache, batch_size=8, chunk_size=8, verify_content=True)
    assert checked.rows == 8                                           # the swapped image's chunk, only
    fresh = encoder.encode_images(swapped, np.array([row]), batch_size=1)[0]
    np.testing.assert_allclose(X2[row], fresh, rtol=0, atol=1e-6)
    assert not np.allclose(X2[row], X0[row])
    result1 = pipeline.load_or_run(swapped, encoder, pipeline.Config(map="pca", verify_content=True), cache_dir=cache)
    assert result1.timings != result0.timings                          # the old result is not reused

    from selector.__main__ import main                                 # the CLI's flag is the same setting
    out = tmp_path / "verified.csv"
    assert main(["--source", "image-folder", "--path", str(root), "--model", f"local-dir:{clip['tmp'] / 'model'}",
                 "--map", "pca", "--no-exclude-flagged", "--verify-content", "--cache-dir", str(cache),
                 "--out", str(out)]) == 0
    assert json.loads(out.with_name("verified.manifest.json").read_text())["config"]["verify_content"] is True


def test_the_app_warns_on_home_when_the_cache_cannot_be_written(emb, tmp_path):
    from tests.test_app_support import cache_env, new_app
    with read_only(tmp_path / "cache") as cache, cache_env(cache):
        at = new_app()
        at.selectbox(key="source").set_value("embeddings").run()
        at.text_input(key="path").input(emb["npz"])
        at.selectbox(key="map").set_value("pca")
        at.button(key="run").click().run(timeout=120)
        assert not at.exception, [e.value for e in at.exception]
        warnings = [w.value for w in at.warning]
        assert any("cannot write the result cache" in w and "make it writable" in w for w in warnings), warnings
        assert {m.label: m.value for m in at.metric}["Samples"] == "120"


def test_a_flipped_bit_in_any_block_of_a_big_file_changes_its_record(tmp_path):
    """file_record reads a file in 16 MB blocks: a change in any block is seen."""
    from selector.files import CacheCorrupt, check_file, file_record
    big = tmp_path / "big.bin"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 40 << 20, dtype=np.uint8).tobytes())
    record = file_record(big)
    check_file(big, record)
    for offset in (0, (16 << 20) + 5, (40 << 20) - 1):
        with open(big, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 1]))
        with pytest.raises(CacheCorrupt, match="does not match its checksum"):
            check_file(big, record)
        with open(big, "r+b") as f:
            f.seek(offset)
            f.write(byte)
        check_file(big, record)


def test_an_upload_into_a_read_only_cache_is_an_inline_error(emb, tmp_path):
    from tests.test_app_support import cache_env, new_app
    with read_only(tmp_path / "cache") as cache, cache_env(cache):
        at = new_app()
        at.selectbox(key="source").set_value("embeddings").run()
        at.file_uploader(key="upload_npz").upload("mine.npz", open(emb["npz"], "rb").read()).run()
        at.button(key="run").click().run(timeout=120)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.error) == 1 and "could not store the upload" in at.error[0].value


def test_a_cache_folder_that_is_a_symlink_loop_runs_uncached_with_a_warning(emb, clip, tmp_path):
    cache = tmp_path / "cache"
    cache.symlink_to(cache)
    result = pipeline.load_or_run(emb["dataset"], PrecomputedEncoder(), CONFIG, cache_dir=cache)
    pd.testing.assert_frame_equal(result.table, emb["reference"].table)
    assert any(f"{cache} is a symlink that leads to no folder" in w for w in result.cache_warnings), \
        result.cache_warnings
    assert _embed_again(clip, cache).rows == 48
    assert cache.is_symlink()                                          # the user's entry is left as it was


def test_a_damaged_checkpoint_is_not_used_and_one_cleared_while_read_is_no_warning(tmp_path, caplog, monkeypatch):
    """A stage whose array file was damaged is refused with a warning. A stage that a run of the same inputs
    clears (its result cached) while this one reads it is simply not there: no warning."""
    from selector import checkpoints
    from selector.checkpoints import Checkpoints
    stages = Checkpoints(tmp_path / "key.stages")
    F = np.arange(12, dtype=np.float32).reshape(4, 3)
    stages.save("adapt", {"rounds": 2}, F=F)
    arrays, info = stages.load("adapt")
    assert np.array_equal(arrays["F"], F) and info == {"rounds": 2}
    damage(tmp_path / "key.stages" / "adapt.F.npy", "bit-flipped")
    with caplog.at_level(logging.INFO):
        assert stages.load("adapt") is None
    assert "unusable" in caplog.text and "WARNING" in [r.levelname for r in caplog.records][-1]

    stages.save("adapt", {"rounds": 2}, F=F)
    real_check = checkpoints.check_file

    def cleared_by_the_other_run(path, record):
        stages.clear()                               # what the run that finished first does
        return real_check(path, record)
    monkeypatch.setattr(checkpoints, "check_file", cleared_by_the_other_run)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert stages.load("adapt") is None
    assert "removed while it was read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_result_swapped_in_by_another_process_while_it_is_read_is_read_again(emb, tmp_path, caplog, monkeypatch):
    """Another process of the same inputs swaps its copy of the result folder in while this one checks the files
    (they are missing for a moment): the folder is read again, with no warning and no run computed again."""
    from selector import results
    cache = copy_tree(emb["cache"], tmp_path / "cache")
    folder = _result_folder(cache)
    theirs = copy_tree(folder, tmp_path / "theirs")
    real_read, calls = results._read, []

    def swapped_meanwhile(path, meta):
        calls.append(path)
        if len(calls) > 1:
            return real_read(path, meta)
        shutil.rmtree(path)                          # the other process moved the old folder away...
        try:
            return real_read(path, meta)
        finally:
            os.replace(theirs, path)                 # ...and then put its own in place
    monkeypatch.setattr(results, "_read", swapped_meanwhile)
    with caplog.at_level(logging.INFO):
        again = _rerun(emb, cache)
    assert len(calls) == 2 and "replaced while it was read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert again.timings == emb["reference"].timings                 # read, not computed again
    pd.testing.assert_frame_equal(again.table, emb["reference"].table)
