"""albumforge.storage: the same calls on a local folder and on a real S3-compatible server."""

from __future__ import annotations

import pickle

import pytest

from albumforge.atomic import WriteError
from albumforge.storage import Store, StoreError, as_store, is_url


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(tmp_path / "out")
    return Store(request.getfixturevalue("s3_out"))


def test_write_read_list_delete(store):
    assert store.listdir("media") == []
    assert not store.exists("media/a/x.txt")
    store.write_text("media/a/x.txt", "hello")
    with store.writing("media/a/y.bin") as tmp:
        assert tmp.suffix == ".bin"  # writers choose formats by the suffix
        tmp.write_bytes(b"\x00\x01")
    assert store.read_text("media/a/x.txt") == "hello"
    assert store.read_bytes("media/a/y.bin") == b"\x00\x01"
    with store.open("media/a/y.bin") as f:
        assert f.read() == b"\x00\x01"
    assert store.listdir("media/a") == ["x.txt", "y.bin"]
    assert store.is_file("media/a/x.txt") and not store.is_file("media/a/none")
    store.delete("media/a/x.txt")
    store.delete("media/a/x.txt")  # gone already: nothing
    assert store.listdir("media/a") == ["y.bin"]
    with pytest.raises(FileNotFoundError):
        store.read_bytes("media/a/x.txt")


def test_a_failed_write_leaves_nothing(store):
    with pytest.raises(WriteError, match="plans/p.json.*encoder died"):
        with store.writing("plans/p.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("encoder died")
    assert not store.exists("plans/p.json")
    assert store.listdir("plans") == []


def test_create_new_is_exclusive(store):
    assert store.create_new(".albumforge/hold.json", b"first")
    assert not store.create_new(".albumforge/hold.json", b"second")
    assert store.read_bytes(".albumforge/hold.json") == b"first"


def test_a_store_pickles_as_its_url_without_secrets(store, monkeypatch):
    store.listdir("")  # builds the filesystem (with its credentials, for S3)
    blob = pickle.dumps(store)
    assert pickle.loads(blob) == store
    import os

    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if secret:
        assert secret.encode() not in blob


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "a\\b", ""])
def test_paths_stay_inside_out(tmp_path, rel):
    with pytest.raises(ValueError, match="not a path inside OUT"):
        Store(tmp_path).write_text(rel, "x")


def test_urls_and_local_paths(tmp_path):
    assert is_url("s3://b/p") and is_url("gs://b") and not is_url(tmp_path) and not is_url("file:///tmp/x")
    assert Store(f"file://{tmp_path}").local and Store(f"file://{tmp_path}").root == tmp_path
    assert as_store(tmp_path) == Store(str(tmp_path)) and as_store(Store("s3://b/p/")).url == "s3://b/p"
    with pytest.raises(StoreError, match="nosuchfs://"):
        Store("nosuchfs://bucket/x").listdir("")


def test_a_write_error_names_the_object(s3_out):
    store = Store(s3_out.replace("s3://", "s3://missing-bucket-").split("/run")[0] + "/run")
    with pytest.raises(WriteError, match="s3://missing-bucket-"):
        store.write_text("a.txt", "x")


def test_folders_sizes_times_and_downloads(store, tmp_path):
    import time

    assert not store.is_dir("manifests")
    store.write_bytes("manifests/albums/a.parquet", b"12345")
    assert store.is_dir("manifests") and store.is_dir("manifests/albums") and not store.is_dir("manifests/albums/a")
    assert store.size("manifests/albums/a.parquet") == 5
    assert abs(store.mtime("manifests/albums/a.parquet") - time.time()) < 120
    store.download("manifests/albums/a.parquet", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"12345"
    with pytest.raises(FileNotFoundError):
        store.size("manifests/albums/none.parquet")
    with pytest.raises(FileNotFoundError):
        store.mtime("manifests/albums/none.parquet")


def test_a_file_written_by_another_client_is_seen_at_once(store):
    """Actors on other nodes write into OUT: no cached listing may hide their files."""
    assert store.listdir("items/a") == [] and not store.is_file("items/a/cover.json")
    other = Store(store.url)  # another process's client
    other.write_text("items/a/cover.json", "{}")
    assert store.is_file("items/a/cover.json") and store.listdir("items/a") == ["cover.json"]
