"""The checksummed archive download: cache, mirror, stale files, checksum mismatches, network errors."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import threading

import pytest

from aclbuild.errors import DownloadError, SourceError
from aclbuild.loaders.download import download_archive
from aclbuild.registry import get_base
from tests.fakes import make_cifar10_archive

CIFAR10, MIN10 = get_base("cifar10"), get_base("min10")


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) and recording each request path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("ACLBUILD_MIRROR", raising=False)
    srv = _Server()
    yield srv
    srv.close()


def test_download_then_cached(server, tmp_path):
    body = os.urandom(3 << 20)  # several chunks
    server.files["/files/cifar-10-python.tar.gz"] = body
    md5 = hashlib.md5(body).hexdigest()
    cache = tmp_path / "cache"
    path = download_archive(CIFAR10, cache, url=f"{server.url}/files/cifar-10-python.tar.gz", md5=md5)
    assert path == cache / "cifar-10-python.tar.gz" and path.read_bytes() == body
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-python.tar.gz"]
    assert len(server.requests) == 1
    again = download_archive(CIFAR10, cache, url=f"{server.url}/files/cifar-10-python.tar.gz", md5=md5.upper())
    assert again == path and len(server.requests) == 1  # cached: no second request


def test_download_uses_mirror_and_replaces_a_stale_file(server, tmp_path, monkeypatch):
    body = gzip.compress(b"tiny")
    server.files["/mirror/tiny-imagenet-200.zip"] = body
    monkeypatch.setenv("ACLBUILD_MIRROR", f"{server.url}/mirror/")
    (tmp_path / "tiny-imagenet-200.zip").write_bytes(b"stale")
    path = download_archive(MIN10, tmp_path, md5=hashlib.md5(body).hexdigest())
    assert path.read_bytes() == body and server.requests == ["/mirror/tiny-imagenet-200.zip"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/c.tgz"] = b"not the real archive"
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"checksum mismatch: expected 0{32}, got [0-9a-f]{32}; the download is "
                                            r"corrupt or the mirror is wrong; delete .* and retry"):  # fmt: skip
        download_archive(CIFAR10, cache, url=f"{server.url}/c.tgz", md5="0" * 32)
    assert list(cache.iterdir()) == []


def test_download_network_errors(server, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download") as err:
        download_archive(CIFAR10, tmp_path, url=f"http://127.0.0.1:{dead}/x.tar.gz", md5="0" * 32)
    assert "\n" not in str(err.value)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_archive(CIFAR10, tmp_path, url=f"{server.url}/missing.tar.gz")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SourceError, match="embedded"):
        download_archive(get_base("digits"), tmp_path)


def test_build_download_through_mirror(cli, server, tmp_path, monkeypatch, legacy_pickle):
    """`aclbuild build --download`: fetched from $ACLBUILD_MIRROR, MD5-checked, used for the test split."""
    import dataclasses

    from datasets import load_dataset

    from aclbuild import registry

    archive = make_cifar10_archive(tmp_path / "src", n_per_batch=2, n_test=3)
    server.files["/mirror/cifar-10-python.tar.gz"] = archive.read_bytes()
    monkeypatch.setenv("ACLBUILD_MIRROR", f"{server.url}/mirror")
    cache, out = tmp_path / "cache", tmp_path / "repo"

    # The official MD5 does not match the fake archive: refused, exit 1, nothing cached, nothing built.
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--download", "--cache-dir", cache, "-o", out)
    assert result.exit_code == 1 and "checksum mismatch" in result.stderr
    assert not out.exists() and list(cache.iterdir()) == []

    # With the fake archive's own MD5 registered, the download is accepted and feeds the test split.
    base = dataclasses.replace(
        registry.BASES["cifar10"],
        archive=dataclasses.replace(registry.CIFAR10_ARCHIVE, md5=hashlib.md5(archive.read_bytes()).hexdigest()),
    )
    monkeypatch.setitem(
        registry.VARIANTS, "aclcifar10", dataclasses.replace(registry.VARIANTS["aclcifar10"], base=base)
    )
    result = cli("build", legacy_pickle, "--dataset", "aclcifar10", "--download", "--cache-dir", cache, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(load_dataset(str(out), split="test")) == 3
    assert server.requests.count("/mirror/cifar-10-python.tar.gz") == 2
