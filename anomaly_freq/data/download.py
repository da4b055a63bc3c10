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
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from anomaly_freq.data.progress import bar, track
from anomaly_freq.errors import AfreqError


@dataclass(frozen=True)
class DownloadInfo:
    name: str
    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None  # only where no sha256 is published (CIFAR-10)
    manual: str | None = None  # where no direct download exists: how to get the data


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
    "kolektorsdd": DownloadInfo(
        "kolektorsdd", "https://go.vicos.si/kolektorsdd", "KolektorSDD.zip",
        "65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
    ),
    "cifar10": DownloadInfo(
        "cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
    ),
    "dagm": DownloadInfo(
        "dagm", "", "", manual="DAGM 2007 has no direct download link: fetch the ten class "
        "archives from the competition page (Heidelberg Collaboratory for Image Processing, "
        "https://hci.iwr.uni-heidelberg.de/node/3616) after accepting its terms, and unpack them "
        "so that <root>/Class1 … Class10 exist",
    ),
}
CHUNK = 1 << 20


def download_info(name: str) -> DownloadInfo:
    if name not in DOWNLOADS:
        raise AfreqError(f"no download for '{name}'; downloadable: {', '.join(DOWNLOADS)}")
    return DOWNLOADS[name]


def fetch(info: DownloadInfo, root: Path, show_progress: bool = True) -> Path:
    """Download ``info`` into ``root/.downloads`` (resuming) and verify it; return the archive."""
    if info.manual:
        raise AfreqError(info.manual)
    folder = root / ".downloads"
    folder.mkdir(parents=True, exist_ok=True)
    archive, part = folder / info.filename, folder / f"{info.filename}.part"
    if archive.exists() and _verified(archive, info):
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
    except urllib.error.HTTPError as err:
        if err.code != 416 or not start:
            raise _resume_error(info, part, err) from err
        # Nothing left after byte `start`: the last attempt stopped between its final byte and
        # the checksum, so the partial file is whole, or it is longer than the archive.
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _resume_error(info, part, err) from err
    if not _verified(part, info):
        kind, expected = _checksum(info)
        got = digest_of(part, kind)
        part.unlink()
        raise AfreqError(f"{info.filename} has {kind} {got}, expected {expected}; the "
                         "partial file was removed, run the download again")
    part.replace(archive)
    return archive


def _resume_error(info: DownloadInfo, part: Path, err: Exception) -> AfreqError:
    have = part.stat().st_size if part.exists() else 0
    return AfreqError(f"download of {info.url} failed ({err!r}); run the same command again "
                      f"to resume from byte {have}")


def _checksum(info: DownloadInfo) -> tuple[str, str | None]:
    return ("sha256", info.sha256) if info.sha256 or not info.md5 else ("md5", info.md5)


def _verified(path: Path, info: DownloadInfo) -> bool:
    kind, expected = _checksum(info)
    return expected is None or digest_of(path, kind) == expected


def digest_of(path: Path, kind: str = "sha256") -> str:
    digest = hashlib.new(kind)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _progress(show: bool) -> Progress:
    return bar("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), show=show)


def _name_problem(raw: str) -> str | None:
    name = PurePosixPath(raw.replace("\\", "/"))
    if name.is_absolute() or raw.startswith(("/", "\\")) or ":" in next(iter(name.parts), ""):
        return "is an absolute path"
    if ".." in name.parts:
        return "climbs out with '..'"
    return None


def check_members(tar: tarfile.TarFile, archive: Path) -> None:
    """Refuse absolute names, ``..``, links that leave the root, devices and fifos."""
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        problem = _name_problem(member.name)
        if problem is None and (member.issym() or member.islnk()):
            target = PurePosixPath(member.linkname)
            base = name.parent if member.issym() else PurePosixPath()
            if target.is_absolute() or ".." in _normalise(base / target):
                problem = f"links outside the extraction folder ({member.linkname})"
        elif problem is None and not (member.isfile() or member.isdir()):
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


def check_zip_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse absolute names, ``..`` and symbolic links in a zip archive."""
    for info in archive.infolist():
        problem = _name_problem(info.filename)
        if problem is None and (info.external_attr >> 16) & 0o170000 == 0o120000:
            problem = "is a symbolic link"
        if problem:
            raise AfreqError(f"refusing to extract {path}: member '{info.filename}' {problem}")


def extract(archive: Path, root: Path, show_progress: bool = True) -> None:
    """Extract a checked tar or zip archive into ``root`` through a staging folder."""
    staging = root / ".extracting"
    shutil.rmtree(staging, ignore_errors=True)
    label = f"extracting {archive.name}"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                check_zip_members(handle, archive)
                handle.extractall(staging, track(handle.infolist(), label, show_progress))
        else:
            with tarfile.open(archive) as tar:
                check_members(tar, archive)
                tar.extractall(staging, track(tar.getmembers(), label, show_progress),
                               filter="data")
        for entry in staging.iterdir():
            target = root / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            entry.replace(target)
    except (tarfile.TarError, zipfile.BadZipFile) as err:
        raise AfreqError(f"{archive} is not a readable archive ({err}); delete it and "
                         "download again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / f".{archive.name}.extracted").write_text("ok\n")


def download_dataset(name: str, root: Path, show_progress: bool = True) -> Path:
    """Fetch, verify and extract a dataset; VisA is then converted to the MVTec layout."""
    info = download_info(name)
    archive = fetch(info, root, show_progress)
    if not (root / f".{archive.name}.extracted").exists():
        extract(archive, root, show_progress)
    if name == "visa":
        from anomaly_freq.data import visa

        for obj in visa.OBJECTS:
            if (root / obj / "Data").is_dir():
                visa.convert_object(root, obj)
    return root
