"""Dataset downloads: streamed with a progress bar, resumable, checksummed, safely extracted.

The archive is fetched to ``<root>/.downloads/<file>.part`` (resumed with an HTTP Range request
when a partial file exists), checked against its published sha256, renamed to ``<file>``, and
extracted only after every member has been checked to stay inside ``root``. A checksum mismatch
deletes the partial file; a refused archive extracts nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from anomaly_freq.errors import AfreqError


@dataclass(frozen=True)
class DownloadInfo:
    name: str
    url: str
    filename: str
    sha256: str


DOWNLOADS = {
    "mvtec_ad": DownloadInfo(
        "mvtec_ad",
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
        "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
        "mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    ),
    "visa": DownloadInfo(
        "visa",
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    ),
}
CHUNK = 1 << 20


def download_info(name: str) -> DownloadInfo:
    if name not in DOWNLOADS:
        raise AfreqError(f"no download for '{name}'; downloadable: {', '.join(DOWNLOADS)}")
    return DOWNLOADS[name]


def fetch(info: DownloadInfo, root: Path, show_progress: bool = True) -> Path:
    """Download ``info`` into ``root/.downloads`` (resuming) and verify it; return the archive."""
    folder = root / ".downloads"
    folder.mkdir(parents=True, exist_ok=True)
    archive, part = folder / info.filename, folder / f"{info.filename}.part"
    if archive.exists() and sha256_of(archive) == info.sha256:
        return archive
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    request = urllib.request.Request(info.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if start and response.status != 206:  # server ignored the range: start over
                start = 0
            total = response.length + start if response.length is not None else None
            with part.open("ab" if start else "wb") as out, _progress(show_progress) as bar:
                task = bar.add_task(info.filename, total=total, completed=start)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        have = part.stat().st_size if part.exists() else 0
        raise AfreqError(f"download of {info.url} failed ({err!r}); run the same command "
                         f"again to resume from byte {have}") from err
    digest = sha256_of(part)
    if digest != info.sha256:
        part.unlink()
        raise AfreqError(f"{info.filename} has sha256 {digest}, expected {info.sha256}; the "
                         "partial file was removed, run the download again")
    part.replace(archive)
    return archive


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _progress(show: bool) -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), disable=not show)


def check_members(tar: tarfile.TarFile, archive: Path) -> None:
    """Refuse absolute names, ``..``, links that leave the root, devices and fifos."""
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        problem = None
        if name.is_absolute() or member.name.startswith(("/", "\\")):
            problem = "is an absolute path"
        elif ".." in name.parts:
            problem = "climbs out with '..'"
        elif member.issym() or member.islnk():
            target = PurePosixPath(member.linkname)
            base = name.parent if member.issym() else PurePosixPath()
            if target.is_absolute() or ".." in _normalise(base / target):
                problem = f"links outside the extraction folder ({member.linkname})"
        elif not (member.isfile() or member.isdir()):
            problem = "is a device or fifo"
        if problem:
            raise AfreqError(f"refusing to extract {archive}: member '{member.name}' {problem}")


def _normalise(path: PurePosixPath) -> tuple[str, ...]:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return ("..",)
            parts.pop()
        elif part != ".":
            parts.append(part)
    return tuple(parts)


def extract(archive: Path, root: Path) -> None:
    """Extract a checked archive into ``root`` through a staging folder."""
    staging = root / ".extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            check_members(tar, archive)
            tar.extractall(staging, filter="data")
        for entry in staging.iterdir():
            target = root / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            entry.replace(target)
    except tarfile.TarError as err:
        raise AfreqError(f"{archive} is not a readable tar archive ({err}); delete it and "
                         "download again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / f".{archive.name}.extracted").write_text("ok\n")


def download_dataset(name: str, root: Path, show_progress: bool = True) -> Path:
    """Fetch, verify and extract a dataset; VisA is then converted to the MVTec layout."""
    info = download_info(name)
    archive = fetch(info, root, show_progress)
    if not (root / f".{archive.name}.extracted").exists():
        extract(archive, root)
    if name == "visa":
        from anomaly_freq.data import visa

        for obj in visa.OBJECTS:
            if (root / obj / "Data").is_dir():
                visa.convert_object(root, obj)
    return root
