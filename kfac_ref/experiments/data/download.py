"""Downloads for the §13 data sets: HTTP fetches that resume, files verified before they get
their final name, MD5 records of the authors' files, and the offline switch."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ...errors import DataError
from .files import _unwritable_reason

log = logging.getLogger(__name__)

OFFLINE_ENV_VAR = "KFAC_REF_OFFLINE"
_FAILED_DOWNLOADS: set[str] = set()  # URLs that failed in this process (not retried)
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


def _md5(path: Path) -> str:
    """Hex MD5 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _failed_before(url: str) -> bool:
    """True when a download from ``url`` failed earlier in this process (it is not retried)."""
    return url in _FAILED_DOWNLOADS


def _remember_failure(url: str) -> None:
    """Remember that a download from ``url`` failed, so this process does not try it again."""
    _FAILED_DOWNLOADS.add(url)


def _downloads_allowed(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$KFAC_REF_OFFLINE`` is set to a non-empty value
    other than ``0`` (the test suite sets it, so no test touches the network by accident)."""
    if download is not None:
        return bool(download)
    return os.environ.get(OFFLINE_ENV_VAR, "") in ("", "0")


def _mirror_url(base: str, name: str) -> str:
    """``base`` joined with a file name."""
    return base.rstrip("/") + "/" + name


def _http_fetch(url: str, part: Path, progress: bool = False) -> None:
    """Download ``url`` into ``part``, resuming an existing partial ``part`` with a Range request.

    A server that answers a Range request with the whole file (status 200) is handled by
    rewriting ``part`` from the start. HTTP 416 (nothing left to send) leaves ``part`` as it is
    for the caller's checksum to judge.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kfac_ref"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return
        raise
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if have and not resumed:
            log.info("%s ignored the Range request; downloading the whole file", url)
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=part.name[: -len(".part")],
            disable=not progress,
            leave=False,
        )
        with bar, part.open("ab" if resumed else "wb") as f:
            for block in iter(lambda: response.read(_CHUNK), b""):
                f.write(block)
                bar.update(len(block))


def _range_start(response: Any) -> int | None:
    """First byte position of a 206 response's ``Content-Range: bytes a-b/n`` header."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _download_verified(name: str, md5: str, directory: Path, mirrors: Sequence[str]) -> Path:
    """Fetch ``name`` from the first mirror that serves bytes with the expected MD5.

    The bytes go to ``<name>.part`` and are renamed (``os.replace``) to ``<name>`` only after the
    checksum matches, so a final name never holds a partial or corrupt file. A corrupt download
    is deleted; a resumed one that fails the checksum is retried once from scratch.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    failures: list[str] = []
    for base in mirrors:
        url = _mirror_url(base, name)
        for _attempt in range(2):
            resuming = part.exists() and part.stat().st_size > 0
            try:
                log.info("downloading %s%s", url, " (resuming)" if resuming else "")
                _http_fetch(url, part)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {exc}")
                break
            actual = _md5(part)
            if actual == md5:
                os.replace(part, final)
                return final
            part.unlink()
            failures.append(f"{url}: MD5 {actual}, expected {md5}")
            if not resuming:
                break
    raise _download_failed(name, md5, directory, mirrors, failures)


def _download_failed(
    name: str, md5: str, directory: Path, mirrors: Sequence[str], failures: list[str]
) -> DataError:
    """The :class:`DataError` for a file that no mirror delivered intact."""
    corrupt = any("MD5" in f for f in failures)
    what = "checksum mismatch (corrupt download)" if corrupt else "download failed"
    return DataError(
        f"MNIST file {name}: {what}. Expected MD5 {md5}. Cache directory searched: {directory}. "
        f"Mirrors tried: {list(mirrors)}. Details: " + "; ".join(failures or ["no mirrors given"])
    )


def _fetch_original(name: str, url: str, directory: Path, validate: Callable[[Path], Any]) -> Path:
    """Download one of the authors' files that has no published checksum, safely.

    The bytes go to ``<name>.part`` (resumed with a Range request if a partial file is there,
    with a progress bar); ``validate(part)`` must accept them (it raises :class:`DataError`
    otherwise, and the part file is deleted). Only then is the file renamed to ``name`` and its
    MD5 recorded beside it in ``<name>.md5`` and printed, so a later change of the file is
    detected (:func:`_check_recorded_md5`). Network failures raise ``OSError``; a read-only
    ``directory`` (:func:`_unwritable_reason`) a :class:`DataError`, before any request.
    """
    why = _unwritable_reason(directory)
    if why is not None:
        raise DataError(f"cannot download {name} into {directory}: {why}.")
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    log.info("downloading %s to %s", url, final)
    _http_fetch(url, part, progress=True)
    try:
        validate(part)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    digest = _md5(part)
    os.replace(part, final)
    write_md5_record(final, digest, url)
    print(
        f"kfac_ref: downloaded {url}: {final.stat().st_size:,} bytes, MD5 {digest} (recorded in "
        f"{final.name}.md5)"
    )
    return final


def write_md5_record(path: Path, digest: str, url: str) -> None:
    """Write ``<path>.md5`` (``"<md5>  <name>  <url>"``) atomically."""
    record = path.with_name(path.name + ".md5")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=record.name + ".", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{digest}  {path.name}  {url}\n")
    os.replace(tmp, record)


def _check_recorded_md5(path: Path) -> bool:
    """False when ``<path>.md5`` exists and the file's MD5 differs from it (a damaged copy)."""
    record = path.with_name(path.name + ".md5")
    if not record.is_file():
        return True
    expected = record.read_text(encoding="utf-8").split()[:1]
    return bool(expected) and _md5(path) == expected[0]
