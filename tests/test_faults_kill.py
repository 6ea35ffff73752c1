"""kill -9 of a real CLI run (the tiny CLIP on 180 image files) at several points: while it embeds the images,
after the adapted embeddings are checkpointed, after the kNN is checkpointed. Running the same command again
must give the same table, byte for byte, as a run that was never interrupted, resuming the finished stages.
And two runs at once on one cache."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.faults import image_folder, tiny_clip_folder

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# What a run's stderr holds when it met a cache it could not use or write (the messages of selector.files,
# results, embed and checkpoints), or a crash.
CACHE_WARNINGS = ("cannot write", "corrupt", "damaged", "cannot be trusted", "unusable", "Traceback")
PROGRESS = re.compile(r"embedding images:[^\r\n]*?(\d+)/(\d+) \[")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    model = tiny_clip_folder(tmp / "model")
    images = image_folder(tmp / "images", per_class=60, size=(40, 48))

    def command(cache, out):
        return [sys.executable, "-m", "selector", "--source", "image-folder", "--path", str(images), "--encoder",
                "open_clip", "--model", model, "--map", "pca", "--batch-size", "8", "--no-exclude-flagged", "--cache-dir", str(cache),
                "--out", str(out)]
    reference = tmp / "reference.csv"
    done = subprocess.run(command(tmp / "reference_cache", reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {"command": command, "reference": reference.read_bytes()}


def _embedding_midway(cache, stderr: str) -> bool:
    return any(0 < int(a) < int(b) for a, b in PROGRESS.findall(stderr))


def _stage_done(stage):
    return lambda cache, stderr: bool(list(cache.glob(f"results/*.stages/{stage}.json")))


def _kill_when(command, when, cache, timeout=300) -> str:
    """Start command, SIGKILL it the moment when(cache, stderr so far) holds; returns its stderr."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.set_blocking(proc.stderr.fileno(), False)
    err, t0 = b"", time.monotonic()
    try:
        while not when(cache, err.decode(errors="replace")):
            assert proc.poll() is None, "the run finished before the kill point: " + err.decode()[-2000:]
            assert time.monotonic() - t0 < timeout, "the kill point never came"
            err += proc.stderr.read() or b""
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return err.decode(errors="replace")


def test_a_cli_run_killed_at_each_point_resumes_to_the_same_table(job, tmp_path):
    """Killed while embedding, then (rerun) after the adapt checkpoint, then (rerun) after the kNN checkpoint:
    the fourth run resumes both stages and writes the uninterrupted table, byte for byte."""
    cache, out = tmp_path / "cache", tmp_path / "out.csv"
    for when in (_embedding_midway, _stage_done("adapt"), _stage_done("neighbors")):
        _kill_when(job["command"](cache, out), when, cache)
        assert not out.exists()
        assert not [p for p in cache.glob("results/*") if not p.name.endswith(".stages")]   # no result cached yet
    assert list(cache.glob("embeddings/*/chunk_*.npy"))                # the embeddings were kept
    again = subprocess.run(job["command"](cache, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == job["reference"]
    assert json.loads(out.with_name("out.manifest.json").read_text())["resumed_stages"] == ["adapt", "neighbors"]
    assert not list(cache.glob("results/*.stages"))                  # checkpoints removed once the result is cached


def test_two_cli_runs_at_once_on_one_cache_give_the_same_table(job, tmp_path):
    """Both embed, checkpoint and write the same result at the same time: both succeed with the uninterrupted
    table, and the cache ends with one whole result and no half-written folders."""
    cache = tmp_path / "cache"
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    procs = [subprocess.Popen(job["command"](cache, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for out in outs]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    warned = [line for e in errs for line in e.splitlines() if any(word in line for word in CACHE_WARNINGS)]
    assert not warned, "\n".join(warned) + "\n\nfirst run's stderr:\n" + errs[0] + "\nsecond run's stderr:\n" + errs[1]
    assert [o.read_bytes() for o in outs] == [job["reference"]] * 2
    assert [p.name for p in cache.glob("results/*")] and not list(cache.glob("results/.*"))
    assert len(list(cache.glob("results/*"))) == 1
