"""The embeddings .npz loader reads only the arrays it uses and checks each one's size before inflating it: a
zip bomb written byte by byte (a 1 MB file whose unused member inflates to 1 GiB) is never inflated, a needed
array over the limit is refused naming the limit and its setting, and damaged headers are refused."""
import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from selector.errors import InputError
from selector.sources import load_embeddings
from selector.sources.embeddings import MAX_ARRAY_ENV, max_array_bytes, read_npz
from tests.synthetic import make_embeddings

GIB = 1 << 30


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def deflated_zeros(header: bytes, n_zeros: int, block: int = 16 << 20) -> tuple[bytes, int]:
    """A raw deflate stream of header + n_zeros zero bytes, and its CRC-32, made without compressing 1 GiB: after
    a full flush the compressor starts afresh, so every 16 MB block of zeros compresses to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(block)
    body = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert n_zeros % block == 0 and c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == body
    crc = zlib.crc32(header)
    for _ in range(n_zeros // block):
        crc = zlib.crc32(zeros, crc)
    return head + body * (n_zeros // block - 1) + body + c.flush(), crc


def write_zip(path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip archive from (name, data, method, crc, uncompressed size) members (method 0 stored, 8 deflated)."""
    out, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        fields = struct.pack("<HHHHHIII", 20, 0, method, 0, 0x21, crc, len(data), size)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0,
                                                                               len(out)) + name.encode()
        out += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name.encode() + data
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    Path(path).write_bytes(bytes(out + central + eocd))
    return Path(path)


def stored(name: str, array) -> tuple:
    data = npy(array)
    return (f"{name}.npy", data, 0, zlib.crc32(data), len(data))


def good_members(n=40, d=8):
    rng = np.random.default_rng(0)
    return [stored("image_embeddings", rng.normal(size=(n, d)).astype(np.float32)),
            stored("labels", np.arange(n) % 2), stored("class_names", np.array(["cat", "dog"]))]


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    shape_header = io.BytesIO()
    np.lib.format.write_array_header_1_0(shape_header, {"descr": "<f4", "fortran_order": False, "shape": (GIB // 4,)})
    data, crc = deflated_zeros(shape_header.getvalue(), GIB)
    junk = ("junk.npy", data, 8, crc, len(shape_header.getvalue()) + GIB)
    return write_zip(tmp_path_factory.mktemp("npz") / "bomb.npz", [*good_members(), junk])


def test_the_bomb_is_real(bomb):
    """zipfile's own directory says 1 GiB inflated, from about 1 MB on disk; the needed keys are intact."""
    with zipfile.ZipFile(bomb) as zf:
        info = zf.getinfo("junk.npy")
        assert info.file_size > GIB and info.compress_size < 1_100_000 and bomb.stat().st_size < 1_200_000
        with zf.open(info) as f:                        # the first 64 MB inflate as promised
            assert f.read(64 << 20)[-10:] == bytes(10)
    assert np.load(bomb)["labels"].tolist()[:4] == [0, 1, 0, 1]


_LOAD = """
import resource, sys
from selector.sources import load_embeddings
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = load_embeddings(sys.argv[1])
print(len(ds), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.faults
def test_an_unused_member_that_inflates_to_1_gib_is_never_read(bomb):
    out = subprocess.run([sys.executable, "-c", _LOAD, str(bomb)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout.split()
    assert int(out[0]) == 40 and int(out[1]) < 50_000      # KB: the process grew by less than 50 MB, not 1 GiB


@pytest.mark.faults
def test_a_needed_member_over_the_limit_names_the_limit_and_its_setting(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "big.npz", good_members())
    assert max_array_bytes() == 16_000_000_000
    monkeypatch.setenv(MAX_ARRAY_ENV, "0.000001")          # 1,000 bytes; the embeddings take 1,408
    with pytest.raises(InputError, match=rf"`image_embeddings` is 0.00 GB uncompressed, over the limit of 1e-06 GB "
                                         rf"per array; set {MAX_ARRAY_ENV} higher"):
        load_embeddings(path)
    monkeypatch.setenv(MAX_ARRAY_ENV, "0.01")
    assert len(load_embeddings(path)) == 40
    monkeypatch.setenv(MAX_ARRAY_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_ARRAY_ENV} must be a number of gigabytes"):
        load_embeddings(path)


@pytest.mark.faults
def test_a_header_that_claims_more_than_its_member_holds_is_refused(tmp_path):
    """A labels member whose .npy header claims 10^9 rows in 200 bytes: refused before any allocation."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<i8", "fortran_order": False, "shape": (10 ** 9,)})
    data = head.getvalue() + bytes(200)
    members = good_members()
    members[1] = ("labels.npy", data, 0, zlib.crc32(data), len(data))
    with pytest.raises(InputError, match=r"`labels` declares shape \(1000000000,\) int64 .* damaged"):
        load_embeddings(write_zip(tmp_path / "lying.npz", members))


def test_only_the_used_keys_are_read(tmp_path):
    path = make_embeddings(tmp_path / "e.npz", n_per_class=5)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("extra.npy", b"not even an array")     # never read, so never an error
    arrays, found = read_npz(path)
    assert sorted(arrays) == ["class_names", "image_embeddings", "labels", "text_embeddings"]
    assert "extra" in found and len(load_embeddings(path)) == 20


def test_members_are_read_exactly_checked_and_fingerprinted_by_their_checksum(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 6)).astype(np.float32)
    arrays = {"image_embeddings": np.asfortranarray(X), "labels": np.arange(4000) % 4,
              "class_names": np.array(["a", "bb", "c", "dé"]), "text_embeddings": rng.normal(size=(4, 6))}
    np.savez(tmp_path / "e.npz", **arrays)
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    digests = {}
    stored, _ = read_npz(tmp_path / "e.npz", digests=digests)
    deflated, _ = read_npz(tmp_path / "z.npz", digests=(same_bytes := {}))
    assert sorted(digests) == sorted(arrays) and same_bytes == digests    # the checksum of the arrays' bytes
    for key, value in arrays.items():
        np.testing.assert_array_equal(stored[key], value)
        np.testing.assert_array_equal(deflated[key], value)
        assert stored[key].dtype == value.dtype
    same = load_embeddings(tmp_path / "e.npz")
    np.savez(tmp_path / "copy.npz", **arrays)
    assert load_embeddings(tmp_path / "copy.npz").content_fingerprint != same.content_fingerprint   # other ids
    np.savez(tmp_path / "e.npz", **arrays)                                                       # rewritten, same
    assert load_embeddings(tmp_path / "e.npz").fingerprint == same.fingerprint
    np.savez(tmp_path / "e.npz", **{**arrays, "image_embeddings": X + np.float32(1e-3)})
    changed = load_embeddings(tmp_path / "e.npz")
    assert changed.embeddings_digest != same.embeddings_digest and changed.fingerprint != same.fingerprint
    half = changed.subset(np.arange(2000))                      # hashed from its bytes, read from the file now
    assert half.embeddings_digest is None and half.content_fingerprint != changed.content_fingerprint
    with pytest.raises(InputError, match="e.npz changed after it was opened"):
        np.asarray(same.embeddings)                             # `same` opened the file before it was rewritten

    data = bytearray((tmp_path / "e.npz").read_bytes())
    at = data.find(npy(X + np.float32(1e-3))[20_000:20_040])          # inside the embeddings' bytes
    data[at] ^= 0x10
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    flipped = load_embeddings(tmp_path / "flipped.npz")           # the directory's checksum names the bytes ...
    with pytest.raises(InputError, match="flipped.npz.*Bad CRC-32 for file 'image_embeddings.npy'"):
        np.asarray(flipped.embeddings)                            # ... and reading them checks it
