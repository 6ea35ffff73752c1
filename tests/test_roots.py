"""Shared-server mode: with SELECTOR_ALLOWED_ROOTS set, every path a user gives is resolved and refused when it
lies outside the allowed folders (`..` escapes, absolute paths, symlinks, image files listed by a manifest,
checkpoints, model folders, cache folders), in the engine, the CLI and the app; SELECTOR_OFFLINE turns every
download off."""
import socket
import time

import pandas as pd
import pytest
from PIL import Image

from selector.errors import InputError, OfflineError
from selector.network import host_reachable
from selector.sources import open_source
from tests.synthetic import make_embeddings

OUTSIDE = "outside the folders this server allows"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """tmp/allowed (the only allowed root) with an embeddings file and an image folder; tmp/secret beside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    for folder in (allowed, secret):
        folder.mkdir()
        make_embeddings(folder / "emb.npz", n_per_class=10)
        for c in ("cat", "dog"):
            (folder / "pets" / c).mkdir(parents=True)
            for k in range(3):
                Image.new("RGB", (8, 8), (40 * k, 90, 10)).save(folder / "pets" / c / f"{k}.png")
    monkeypatch.setenv("SELECTOR_ALLOWED_ROOTS", f"{tmp_path / 'nowhere'}:{allowed}")
    monkeypatch.setenv("SELECTOR_CACHE_DIR", str(tmp_path / "server_cache"))
    return {"allowed": allowed, "secret": secret, "tmp": tmp_path}


def test_paths_inside_the_roots_are_used(server):
    assert len(open_source("embeddings", path=server["allowed"] / "emb.npz")) == 40
    assert len(open_source("image-folder", path=str(server["allowed"] / "pets" / "." / "cat" / ".."))) == 6


@pytest.mark.parametrize("given", [
    "{allowed}/../secret/emb.npz",            # a `..` escape
    "{secret}/emb.npz",                       # an absolute path outside
    "{allowed}/link.npz",                     # a symlink inside that points outside
])
def test_escapes_and_outside_paths_are_refused(server, given):
    (server["allowed"] / "link.npz").symlink_to(server["secret"] / "emb.npz")
    path = given.format(**server)
    with pytest.raises(InputError, match=OUTSIDE) as err:
        open_source("embeddings", path=path)
    assert "SELECTOR_ALLOWED_ROOTS" in str(err.value) and path in str(err.value)


def test_a_relative_path_is_resolved_against_the_working_folder(server, monkeypatch):
    monkeypatch.chdir(server["allowed"])
    assert len(open_source("embeddings", path="emb.npz")) == 40
    with pytest.raises(InputError, match=OUTSIDE):
        open_source("embeddings", path="../secret/emb.npz")


def test_image_files_outside_the_roots_are_refused_wherever_they_are_listed(server):
    manifest = server["allowed"] / "labels.csv"
    pd.DataFrame({"path": [str(server["allowed"] / "pets/cat/0.png"), "../secret/pets/dog/1.png"],
                  "label": ["cat", "dog"]}).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=r"1 image file\(s\) of manifest/labels are outside"):
        open_source("manifest", path=manifest)
    (server["allowed"] / "pets" / "dog" / "stolen.png").symlink_to(server["secret"] / "pets" / "dog" / "0.png")
    with pytest.raises(InputError, match="outside"):
        open_source("image-folder", path=server["allowed"] / "pets")
    with pytest.raises(InputError, match=OUTSIDE):
        open_source("manifest", path=manifest, root=server["secret"])


def test_model_files_and_cache_folders_outside_the_roots_are_refused(server):
    from selector import pipeline
    from selector.encoders import open_encoder
    from selector.encoders.precomputed import PrecomputedEncoder
    with pytest.raises(InputError, match="checkpoint file .*" + OUTSIDE):
        open_encoder("open_clip", checkpoint=str(server["secret"] / "w.pt"))
    with pytest.raises(InputError, match="model folder .*" + OUTSIDE):
        open_encoder("open_clip", model=f"local-dir:{server['allowed']}/../secret")
    data = open_source("embeddings", path=server["allowed"] / "emb.npz")
    with pytest.raises(InputError, match="cache folder .*" + OUTSIDE):
        pipeline.load_or_run(data, PrecomputedEncoder(), pipeline.Config(map="none"), cache_dir=server["secret"])
    ok = pipeline.load_or_run(data, PrecomputedEncoder(), pipeline.Config(map="none"),
                              cache_dir=server["tmp"] / "server_cache")      # the server's own cache folder
    assert len(ok.table) == 40


def test_the_cli_refuses_an_outside_path_with_exit_2(server, capsys):
    from selector.__main__ import main
    assert main(["--source", "embeddings", "--path", f"{server['allowed']}/../secret/emb.npz", "--map", "none",
                 "--out", str(server["tmp"] / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and OUTSIDE in err and "\n" not in err


def test_the_app_refuses_an_outside_path_inline(server):
    from tests.test_app_support import cache_env, new_app
    with cache_env(server["tmp"] / "server_cache"):
        at = new_app()
        at.selectbox(key="source").set_value("embeddings").run()
        at.text_input(key="path").input(str(server["secret"] / "emb.npz"))
        at.button(key="run").click().run(timeout=60)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.error) == 1 and OUTSIDE in at.error[0].value


def test_unset_roots_allow_every_path(server, monkeypatch):
    monkeypatch.delenv("SELECTOR_ALLOWED_ROOTS")
    assert len(open_source("embeddings", path=server["secret"] / "emb.npz")) == 40


def test_offline_turns_every_download_off(tmp_path, monkeypatch):
    from selector.sources import load_torchvision
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert host_reachable("127.0.0.1", port)
        monkeypatch.setenv("SELECTOR_OFFLINE", "1")
        t0 = time.perf_counter()
        assert not host_reachable("127.0.0.1", port)
        assert time.perf_counter() - t0 < 0.1
    finally:
        listener.close()
    with pytest.raises(OfflineError, match="SELECTOR_OFFLINE"):
        load_torchvision("cifar10", root=tmp_path, download=True)
