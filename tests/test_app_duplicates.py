"""Duplicates & outliers page (AppTest): planted exact copies shown as groups, the kept image first; "keep
one per group" marks every copy bad in one step, and undo restores them; outliers ranked by score."""
import numpy as np
import pytest

from tests import synthetic
from tests.test_app_support import cache_env, goto, new_app, run_embeddings

PAGE = "pages/6_Duplicates_and_outliers.py"
COPIED = [3, 50, 100, 150, 200]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dups")
    with cache_env(tmp / "cache"):
        src = synthetic.make_embeddings(tmp / "src.npz", n_per_class=60, d=16, seed=44, images=True)
        z = dict(np.load(src))
        n = len(z["labels"])
        for key in ("image_embeddings", "labels", "paths"):
            z[key] = np.concatenate([z[key], z[key][COPIED]])      # exact copies of five images, at the end
        np.savez(tmp / "dups.npz", **z)
        yield {"npz": tmp / "dups.npz", "n": n}


def test_groups_keep_one_per_group_and_undo(env):
    at = goto(run_embeddings(new_app(), env["npz"], noise="none"), PAGE)
    assert any(c.value.startswith("5 groups of near-identical images (5 copies)") for c in at.caption)
    groups = [img for img in at.image if img.captions and img.captions[0].endswith("(kept)")]
    assert len(groups) == 5
    kept = sorted(int(g.captions[0].split()[0][1:]) for g in groups)
    assert kept == COPIED
    copies = sorted(int(g.captions[1].split()[0][1:]) for g in groups)
    assert copies == list(range(env["n"], env["n"] + 5))
    assert all("cos 1.0000" in g.captions[1] for g in groups)
    button = at.button(key="dups_keep_one")
    assert button.label == "Keep one per group: mark 5 copies bad"
    button.click().run()
    assert not at.exception
    assert any("Marked 5 copies bad in one step" in s.value for s in at.success)
    assert at.button(key="dups_keep_one").disabled
    assert sum(" - bad" in c for img in at.image for c in img.captions) == 5
    at.button(key="dups_undo").click().run()
    assert any("5 decision(s) restored" in s.value for s in at.success)
    assert at.button(key="dups_keep_one").label == "Keep one per group: mark 5 copies bad"


def test_outliers_are_ranked_by_score(env):
    at = goto(run_embeddings(new_app(), env["npz"], noise="none"), PAGE)
    (gallery,) = [img for img in at.image if len(img.captions) == 48]
    scores = [float(c.split("(")[1].split(")")[0]) for c in gallery.captions]
    assert scores == sorted(scores, reverse=True)


def test_missing_class_group_and_leaks_across_splits(tmp_path_factory):
    """A planted class missing from the label set is shown as its own group (not label errors); with a split
    column the train/test copies are shown as leaks, and Home counts both."""
    tmp = tmp_path_factory.mktemp("leaks")
    with cache_env(tmp / "cache"):
        z = dict(np.load(synthetic.make_embeddings(tmp / "src.npz", n_per_class=60, d=16, seed=44)))
        X, y, planted = synthetic.plant_missing_class(z["image_embeddings"], z["labels"], 4, n=60, seed=1)
        z["image_embeddings"], z["labels"] = np.concatenate([X, X[COPIED]]), np.r_[y, y[COPIED]]
        z["splits"] = np.array(["train"] * len(X) + ["test"] * len(COPIED))
        np.savez(tmp / "leaks.npz", **z)
        at = run_embeddings(new_app(), tmp / "leaks.npz", noise="none")
        assert any("in groups that match no class" in c.value and "10 images leaked across splits" in c.value
                   for c in at.caption), [c.value for c in at.caption if "Also" in c.value]
        at = goto(at, PAGE)
        assert [t.label for t in at.tabs] == ["Near-duplicates", "Leaked across splits", "Matches no class"]
        assert any("10 images have a near-duplicate in another split (5 groups)" in c.value for c in at.caption)
        assert any(w.value.startswith("Group 1: ") and "a class missing from the label set?" in w.value
                   for w in at.warning), [w.value for w in at.warning]
        texts = " ".join(c.value for c in at.caption)
        assert "[train]" in texts and "[test]" in texts          # embeddings-only: captions stand in for images


def test_a_reopened_run_reads_the_embeddings_for_the_groups_and_says_so_when_it_cannot(env, tmp_path):
    import shutil

    from selector.ui import backend
    npz = tmp_path / "mine.npz"
    shutil.copy(env["npz"], npz)
    run_embeddings(new_app(), npz, noise="none")                # computed and cached
    backend.registry.clear()                                  # a server restart: the run is re-opened
    reopened = goto(run_embeddings(new_app(), npz, noise="none"), PAGE)
    assert all("cos 1.0000" in g.captions[1] for g in reopened.image
               if g.captions and g.captions[0].endswith("(kept)"))       # read on first use, the same values
    backend.registry.clear()
    at = run_embeddings(new_app(), npz, noise="none")           # re-opened again: nothing read yet
    z = dict(np.load(npz))
    np.savez(npz, **{**z, "image_embeddings": z["image_embeddings"] + 1})   # the file is replaced meanwhile
    at = goto(at, PAGE)
    assert any("image embeddings cannot be read" in e.value and "changed after it was opened" in e.value
               for e in at.error)
    groups = [img for img in at.image if img.captions and img.captions[0].endswith("(kept)")]
    assert len(groups) == 5 and not any("cos" in c for g in groups for c in g.captions)   # shown, without cosines
