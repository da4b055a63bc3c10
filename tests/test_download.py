"""Downloads against a local HTTP server on 127.0.0.1: checksum, resume, safe extraction."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from anomaly_freq.data import download
from anomaly_freq.data.download import DownloadInfo, extract, fetch
from anomaly_freq.errors import AfreqError
from tests.conftest import run_cli


class Server:
    """Serves `files`; `cut_after` bytes into the first response it drops the connection."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header else 0
                if start and start >= len(body):
                    self.send_error(416)  # as real servers answer a range past the end
                    return
                self.send_response(206 if header else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None:
                    payload, server.cut_after = payload[:server.cut_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def info(self, name: str, sha: str | None = None) -> DownloadInfo:
        body = self.files[f"/{name}"]
        return DownloadInfo("test", f"{self.url}/{name}", name,
                            sha or hashlib.sha256(body).hexdigest())


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


GOOD = {"bottle/train/good/000.png": b"x" * 300_000, "bottle/readme.txt": b"hello"}


def test_good_checksum_downloads_and_extracts(server, tmp_path):
    server.files["/a.tar"] = make_tar(GOOD)
    archive = fetch(server.info("a.tar"), tmp_path, show_progress=False)
    extract(archive, tmp_path)
    assert (tmp_path / "bottle" / "readme.txt").read_bytes() == b"hello"
    assert not (tmp_path / ".downloads" / "a.tar.part").exists()


def test_bad_checksum_removes_partial_file(server, tmp_path):
    server.files["/a.tar"] = make_tar(GOOD)
    with pytest.raises(AfreqError, match="expected 0000.*partial file was removed"):
        fetch(server.info("a.tar", sha="0" * 64), tmp_path, show_progress=False)
    assert list((tmp_path / ".downloads").iterdir()) == []
    assert not (tmp_path / "bottle").exists()


def test_interrupted_download_resumes(server, tmp_path):
    server.files["/a.tar"] = make_tar(GOOD)
    server.cut_after = 100_000
    with pytest.raises(AfreqError, match="resume from byte 100000"):
        fetch(server.info("a.tar"), tmp_path, show_progress=False)
    assert (tmp_path / ".downloads" / "a.tar.part").stat().st_size == 100_000
    archive = fetch(server.info("a.tar"), tmp_path, show_progress=False)
    assert server.ranges[-1] == "bytes=100000-"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == server.info("a.tar").sha256


@pytest.mark.parametrize("whole", [True, False])
def test_partial_file_holding_every_byte_is_checked_not_refetched(server, tmp_path, whole):
    # A download stopped after its last byte but before the checksum: the server answers 416.
    body = make_tar(GOOD)
    server.files["/a.tar"] = body
    part = tmp_path / ".downloads" / "a.tar.part"
    part.parent.mkdir()
    part.write_bytes(body if whole else body[:-1] + b"?")
    if whole:
        archive = fetch(server.info("a.tar"), tmp_path, show_progress=False)
        assert archive.read_bytes() == body and not part.exists()
    else:
        with pytest.raises(AfreqError, match="partial file was removed"):
            fetch(server.info("a.tar"), tmp_path, show_progress=False)
        assert not part.exists()
    assert server.ranges == [f"bytes={len(body)}-"]


def test_archive_with_a_dot_member_extracts(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:  # as `tar -C dir -cf x.tar .` writes
        for name in ("./", "./bottle/"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        info = tarfile.TarInfo("./bottle/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    archive = tmp_path / "dot.tar"
    archive.write_bytes(buffer.getvalue())
    extract(archive, tmp_path / "root")
    assert (tmp_path / "root" / "bottle" / "readme.txt").read_bytes() == b"hello"


@pytest.mark.parametrize(
    ("members", "links", "needle"),
    [({"../evil.txt": b"x"}, None, "climbs out"),
     ({"/abs.txt": b"x"}, None, "absolute path"),
     ({"ok.txt": b"x"}, {"passwd": "/etc/passwd"}, "links outside"),
     ({"ok.txt": b"x"}, {"a/b/link": "../../../x"}, "links outside")],
)
def test_malicious_members_are_refused(server, tmp_path, members, links, needle):
    server.files["/bad.tar"] = make_tar(members, links)
    root = tmp_path / "root"
    archive = fetch(server.info("bad.tar"), root, show_progress=False)
    with pytest.raises(AfreqError, match=needle):
        extract(archive, root)
    assert sorted(p.name for p in root.iterdir()) == [".downloads"]
    assert not (tmp_path / "evil.txt").exists()


def test_cli_download_runs_the_visa_conversion(server, tmp_path, monkeypatch):
    from tests.trees import write_raw_visa

    raw = write_raw_visa(tmp_path / "raw", objects=("candle",))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(raw.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(raw)), recursive=False)
    server.files["/VisA.tar"] = buffer.getvalue()
    info = server.info("VisA.tar")
    monkeypatch.setitem(download.DOWNLOADS, "visa", info)
    download.download_dataset("visa", tmp_path / "visa", show_progress=False)
    assert (tmp_path / "visa" / "visa_pytorch" / "candle" / ".complete").exists()


def test_cli_download_of_unknown_dataset_fails_cleanly(tmp_path):
    result = run_cli(["data", "download", "nosuch"], cwd=tmp_path)
    assert result.returncode != 0 and "invalid choice" in result.stderr


def test_zip_archives_extract_and_refuse_escapes(server, tmp_path):
    import zipfile

    def make_zip(names):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in names:
                archive.writestr(name, b"data")
        return buffer.getvalue()

    server.files["/ok.zip"] = make_zip(["kos01/Part0.jpg", "kos01/Part0_label.bmp"])
    archive = fetch(server.info("ok.zip"), tmp_path / "a", show_progress=False)
    extract(archive, tmp_path / "a")
    assert (tmp_path / "a" / "kos01" / "Part0.jpg").read_bytes() == b"data"
    server.files["/bad.zip"] = make_zip(["ok.txt", "../../escape.txt"])
    archive = fetch(server.info("bad.zip"), tmp_path / "b", show_progress=False)
    with pytest.raises(AfreqError, match="climbs out"):
        extract(archive, tmp_path / "b")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "b" / "ok.txt").exists()


def test_md5_checksum_is_used_when_no_sha256_is_published(server, tmp_path):
    server.files["/c.tar"] = make_tar(GOOD)
    info = DownloadInfo("c", f"{server.url}/c.tar", "c.tar", md5="0" * 32)
    with pytest.raises(AfreqError, match="has md5 .* expected 0{32}"):
        fetch(info, tmp_path, show_progress=False)
