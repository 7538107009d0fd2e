"""Fetch a base's official source archive into a cache folder, verified by MD5.

The archive lands at ``cache_dir/<archive filename>``. A base whose source is several files (the MNIST family's
four IDX files, a :class:`~aclbuild.registry.FileSet`) gets them in ``cache_dir/<set folder>/`` (``mnist``,
``fmnist``, ``kmnist``: their file names are the same), each checked against its own MD5, and that folder is what
the loader reads. An existing file with the right MD5 is reused without any network request. A download streams
into a hidden temporary file beside it, is checked, and only then renamed into place, so an interrupted or corrupt
download never leaves a file that looks complete.

Environment:
    ``ACLBUILD_MIRROR``: a base URL used instead of the official location when no ``url`` is given; the archive's
    file name is appended (``ACLBUILD_MIRROR=https://mirror.example/datasets`` fetches
    ``https://mirror.example/datasets/cifar-10-python.tar.gz``, and for a set of files
    ``https://mirror.example/datasets/mnist/train-images-idx3-ubyte.gz`` and the others). The MD5 is still the
    official one.

Example:
    >>> from aclbuild.registry import get_base
    >>> download_archive(get_base("cifar10"), "~/.cache/aclbuild")   # doctest: +SKIP
    PosixPath('/home/me/.cache/aclbuild/cifar-10-python.tar.gz')
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from aclbuild.atomic import atomic_file, remove_leftovers
from aclbuild.errors import DownloadError, InputError, SourceError
from aclbuild.paths import write_errors
from aclbuild.progress import progress_bar
from aclbuild.registry import Archive, Base, FileSet

MIRROR_ENV = "ACLBUILD_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 60


def file_md5(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks (archives are hundreds of MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def archive_url(base: Base, url: str | None = None) -> str:
    """Where to fetch ``base``'s archive: ``url``, else ``$ACLBUILD_MIRROR/<filename>``, else the official URL."""
    if base.archive is None:
        raise SourceError(f"base {base.name} is embedded (it ships with scikit-learn); there is nothing to download")
    if isinstance(base.archive, FileSet):
        raise SourceError(f"base {base.name} comes as several files; use file_urls for their addresses")
    if url:
        return url
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{base.archive.filename}" if mirror else base.archive.url


def file_urls(files: FileSet, url: str | None = None) -> list[tuple[Archive, str]]:
    """Each file of ``files`` with where to fetch it: ``url/<name>`` (``url`` a folder URL), else
    ``$ACLBUILD_MIRROR/<set folder>/<name>``, else the official URL.

    Example:
        >>> from aclbuild.registry import MNIST_FILES
        >>> file_urls(MNIST_FILES, "https://m.example/mnist")[0][1]
        'https://m.example/mnist/train-images-idx3-ubyte.gz'
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    folder = url.rstrip("/") if url else f"{mirror.rstrip('/')}/{files.folder}" if mirror else None
    return [(file, f"{folder}/{file.filename}" if folder else file.url) for file in files.files]


def download_archive(base: Base, cache_dir: str | Path, url: str | None = None, md5: str | None = None) -> Path:
    """Path of ``base``'s archive in ``cache_dir``, downloading it only when absent or not matching the MD5.

    ``url`` overrides the source (default: ``$ACLBUILD_MIRROR/<filename>`` when set, else the official URL);
    ``md5`` overrides the expected checksum. Raises :class:`DownloadError` (one line) on a network failure or a
    checksum mismatch, and :class:`SourceError` for the embedded ``digits`` base.

    For a base of several files (mnist, fmnist, kmnist) the result is the folder ``cache_dir/<set folder>`` holding
    all of them; ``url`` is then the folder URL the file names are appended to, and ``md5`` is refused (each file
    has its own).

    Example:
        >>> path = download_archive(get_base("min10"), "cache")   # doctest: +SKIP
        >>> path.name                                              # doctest: +SKIP
        'tiny-imagenet-200.zip'
    """
    cache = Path(cache_dir).expanduser()
    if isinstance(base.archive, FileSet):
        if md5:
            raise InputError(f"base {base.name} comes as {len(base.archive.files)} files, each with its own MD5; "
                             "an md5 override applies to single-archive bases only")  # fmt: skip
        folder = cache / base.archive.folder
        for file, source in file_urls(base.archive, url):
            _download_file(source, file.md5, folder / file.filename)
        return folder
    source = archive_url(base, url)
    assert base.archive is not None  # archive_url refused the embedded base
    return _download_file(source, (md5 or base.archive.md5).lower(), cache / base.archive.filename)


def _download_file(source: str, expected: str, dest: Path) -> Path:
    """``dest``, fetched from ``source`` unless it is there with MD5 ``expected``; checked before it is in place."""
    cache = dest.parent
    if dest.is_file() and file_md5(dest) == expected:
        return dest
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create cache folder {cache}: {exc.strerror or exc}") from None
    remove_leftovers(cache, dest.name)  # what a killed download left
    # atomic: readers see no file or the whole verified one; a full disk or a read-only cache is one line
    with write_errors(cache, option="--cache-dir"), atomic_file(dest) as tmp:
        with open(tmp, "wb") as out:
            got = _fetch(source, out, dest.name)
        if got != expected:
            raise DownloadError(
                f"{dest.name} from {source}: checksum mismatch: expected {expected}, got {got}; the download is "
                f"corrupt or the mirror is wrong; delete {dest} if it exists and retry"
            )
    return dest


def _fetch(url: str, out, label: str) -> str:
    """Stream ``url`` into ``out`` with a progress bar; return the hex MD5 of what was written."""
    digest = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": "aclbuild"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with progress_bar(f"downloading {label}", total) as advance:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    with write_errors(Path(out.name).parent, needed=total, option="--cache-dir"):
                        out.write(chunk)  # a full disk is not a failed download
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; check the URL or mirror") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot download {url}: {exc.reason}; check the network, the URL or the mirror") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: a malformed URL (no scheme); OSError covers timeouts and resets mid-stream.
        raise DownloadError(f"cannot download {url}: {exc or type(exc).__name__}; retry, or check the URL") from None
    return digest.hexdigest()
