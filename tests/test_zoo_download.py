"""Download and cache, against a throw-away HTTP server on 127.0.0.1 (no real network)."""

import contextlib
import hashlib
import http.server
import json
import os
import re
import socket
import threading

import pytest

from simclrv2.zoo import download as dl
from simclrv2.zoo.checkpoints import SAVED_MODEL_FILES, get_checkpoint

NAME, STAGE = "r50_1x_sk0", "pretrained"
PREFIX = "/bucket/" + get_checkpoint(NAME, STAGE).bucket_path


def _files():
    rng = __import__("random").Random(0)
    sizes = {"saved_model.pb": 3000, "variables/variables.index": 500,
             "variables/variables.data-00000-of-00001": 300_000}
    return {f: rng.randbytes(n) for f, n in sizes.items()}


FILES = _files()
BIG = "variables/variables.data-00000-of-00001"


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 5  # a stuck client can't hang the test

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        srv = self.server
        rel = self.path[len(PREFIX) + 1:] if self.path.startswith(PREFIX + "/") else None
        if not srv.head:
            self.send_error(501)  # what http.server answers a method it does not implement
            return
        if rel not in srv.files:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(srv.files[rel])))
        self.end_headers()

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        rel = self.path[len(PREFIX) + 1:] if self.path.startswith(PREFIX + "/") else None
        if rel not in srv.files:
            self.send_error(404)
            return
        if srv.errors_left > 0:
            srv.errors_left -= 1
            self.send_error(503)
            return
        body = srv.files[rel]
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.honor_range and int(m.group(1)) >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if m and srv.honor_range:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if not srv.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        cut = rel == BIG and (srv.truncate_always or srv.drops_left > 0)
        if cut:
            srv.drops_left -= 1
            # Promise everything, deliver half, then hang up.
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(ConnectionError):  # a client may hang up on purpose
            self.wfile.write(payload)


@contextlib.contextmanager
def serve(honor_range=True, drops=0, truncate_always=False, files=FILES, errors=0,
          no_length=False, head=True):
    """no_length: GET answers carry no Content-Length (the body ends when the connection
    closes); head=False: HEAD is not implemented (HTTP 501)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.files, server.requests = dict(files), []
    server.honor_range, server.drops_left, server.truncate_always = honor_range, drops, truncate_always
    server.errors_left = errors
    server.no_length, server.head = no_length, head
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/bucket"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _download(tmp_path, base, **kw):
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("progress", False)
    return dl.download_checkpoint(NAME, STAGE, cache_dir=tmp_path, base_url=base, **kw)


def _final(tmp_path):
    return dl.saved_model_cache_path(get_checkpoint(NAME, STAGE), tmp_path)


def _assert_same_files(path):
    for rel, body in FILES.items():
        assert (path / rel).read_bytes() == body, rel
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == \
        sorted(FILES)


def test_whole_download_then_cache_hit(tmp_path):
    with serve() as (server, base):
        path = _download(tmp_path, base, progress=True)
        assert path == _final(tmp_path)
        _assert_same_files(path)
        assert len(server.requests) == 3
        assert all(r is None for _, r in server.requests)
        # A second call is served from the cache without touching the network.
        assert _download(tmp_path, base) == path
        assert len(server.requests) == 3
    assert not (path.parent / (path.name + ".partial")).exists()
    assert dl.is_cached(get_checkpoint(NAME, STAGE), tmp_path)


def test_interrupted_download_resumes_with_range(tmp_path):
    with serve(drops=1) as (server, base):
        path = _download(tmp_path, base, retries=3)
        _assert_same_files(path)
    big = [r for p, r in server.requests if p.endswith(BIG)]
    assert big[0] is None
    assert big[1] == f"bytes={len(FILES[BIG]) // 2}-"


def test_resume_across_calls(tmp_path):
    with serve(drops=1) as (server, base):
        with pytest.raises(dl.CheckpointDownloadError, match="closed after"):
            _download(tmp_path, base, retries=1)
        assert not _final(tmp_path).exists()  # a partial download is never a cache entry
        path = _download(tmp_path, base, retries=1)
        _assert_same_files(path)
    # Finished files were not fetched twice; the big one continued where it stopped.
    assert [p.rsplit("/", 2)[-1] for p, _ in server.requests].count("saved_model.pb") == 1
    assert server.requests[-1][1] == f"bytes={len(FILES[BIG]) // 2}-"


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    with serve(honor_range=False, drops=1) as (server, base):
        path = _download(tmp_path, base, retries=2)
        _assert_same_files(path)  # not the half-file with the whole file appended
    assert server.requests[-1][1] is not None  # we did ask to resume


def test_server_errors_are_retried(tmp_path):
    with serve(errors=2) as (server, base):
        path = _download(tmp_path, base, retries=3)
        _assert_same_files(path)
    assert len(server.requests) == 5


def test_stale_part_longer_than_file_is_restarted(tmp_path):
    # e.g. the object was replaced upstream by a smaller one: the server answers 416.
    staging = _final(tmp_path).parent / (_final(tmp_path).name + ".partial")
    stale = staging / "saved_model.pb.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * (len(FILES["saved_model.pb"]) + 10))
    with serve() as (server, base):
        path = _download(tmp_path, base, retries=2)
        _assert_same_files(path)
    assert server.requests[0][1] == f"bytes={len(FILES['saved_model.pb']) + 10}-"
    assert server.requests[1][1] is None


def test_not_found_is_a_clear_error_and_no_entry(tmp_path):
    files = {k: v for k, v in FILES.items() if k != "variables/variables.index"}
    with serve(files=files) as (server, base):
        with pytest.raises(dl.CheckpointDownloadError) as info:
            _download(tmp_path, base, retries=3)
    msg = str(info.value)
    assert "HTTP 404" in msg
    assert f"{base}{PREFIX[len('/bucket'):]}/variables/variables.index" in msg
    assert str(_final(tmp_path)) in msg
    assert "gsutil -m cp -r gs://simclr-checkpoints-tf2/simclrv2/pretrained/r50_1x_sk0/saved_model" in msg
    assert "curl -fL" in msg
    assert isinstance(info.value, OSError)
    assert not _final(tmp_path).exists()
    # A 404 is not retried.
    assert sum(p.endswith("variables.index") for p, _ in server.requests) == 1


def test_truncated_file_never_becomes_an_entry(tmp_path):
    with serve(honor_range=False, truncate_always=True) as (server, base):
        with pytest.raises(dl.CheckpointDownloadError, match=r"closed after \d+ of 300000 bytes"):
            _download(tmp_path, base, retries=3)
    assert not _final(tmp_path).exists()
    assert sum(p.endswith(BIG) for p, _ in server.requests) == 3
    assert not list(tmp_path.rglob("variables.data-00000-of-00001"))  # only the .part


def test_offline_names_url_and_cache(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(dl.CheckpointDownloadError, match=r"could not download http://127\.0\.0\.1"):
        _download(tmp_path, f"http://127.0.0.1:{port}", retries=2)
    assert not _final(tmp_path).exists()


def test_env_vars_pick_cache_and_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLRV2_HOME", str(tmp_path / "home"))
    assert dl.cache_dir() == tmp_path / "home"
    with serve() as (server, base):
        monkeypatch.setenv("SIMCLRV2_BASE_URL", base + "/")
        path = dl.download_checkpoint(NAME, STAGE, progress=False)
    assert path == tmp_path / "home" / "saved_models" / get_checkpoint(NAME, STAGE).bucket_path
    _assert_same_files(path)
    monkeypatch.delenv("SIMCLRV2_HOME")
    assert dl.cache_dir() == dl.pathlib.Path.home() / ".keras" / "simclrv2"


def test_incomplete_hand_made_copy_is_reported(tmp_path):
    final = _final(tmp_path)
    final.mkdir(parents=True)
    (final / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(dl.CheckpointDownloadError, match="lacks variables/variables.index"):
        _download(tmp_path, "http://127.0.0.1:9")


def test_sha256_of_files(tmp_path):
    for rel, body in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(body)
    digests = dl.sha256_of_files(tmp_path)
    assert list(digests) == sorted(SAVED_MODEL_FILES)
    assert digests[BIG] == hashlib.sha256(FILES[BIG]).hexdigest()
    with pytest.raises(NotADirectoryError):
        dl.sha256_of_files(tmp_path / "nope")


# --------------------------------------------------------------------------- no lost data

def _record(path):
    return json.loads(dl.manifest_path(path).read_text())["files"]


def test_cut_short_without_content_length_is_caught_by_head(tmp_path):
    # The server sends bodies without Content-Length (the end is the connection closing), so
    # a cut looks like the end of the file; its HEAD answer gives the size.
    with serve(honor_range=False, truncate_always=True, no_length=True) as (server, base):
        with pytest.raises(dl.CheckpointDownloadError, match=r"closed after \d+ of 300000 bytes"):
            _download(tmp_path, base, retries=2)
    assert not _final(tmp_path).exists()
    assert not dl.is_cached(get_checkpoint(NAME, STAGE), tmp_path)


def test_cut_short_with_no_length_anywhere_is_resumed_after_a_range_probe(tmp_path):
    # No Content-Length and no HEAD: a Range request past the last byte received tells a cut
    # (206, more follows) from the whole file (416).
    with serve(drops=1, no_length=True, head=False) as (server, base):
        path = _download(tmp_path, base, retries=2)
        _assert_same_files(path)
    big = [r for p, r in server.requests if p.endswith(BIG)]
    half = len(FILES[BIG]) // 2
    # The resumed 206 carries the total in its Content-Range: no probe after it.
    assert big == [None, f"bytes={half}-", f"bytes={half}-"]
    pb = [r for p, r in server.requests if p.endswith("saved_model.pb")]
    assert pb == [None, f"bytes={len(FILES['saved_model.pb'])}-"]  # probed, 416: whole


def test_size_that_cannot_be_checked_is_said(tmp_path, capsys):
    with serve(honor_range=False, no_length=True, head=False) as (server, base):
        path = _download(tmp_path, base)
    _assert_same_files(path)
    err = capsys.readouterr().err
    assert err.count("could not check the size") == 3 and "sha256 is recorded" in err


def test_sha256_recorded_at_download_and_checked_on_every_use(tmp_path):
    with serve() as (server, base):
        path = _download(tmp_path, base)
    record = _record(path)
    assert record[BIG] == {"bytes": len(FILES[BIG]),
                           "sha256": hashlib.sha256(FILES[BIG]).hexdigest()}
    assert sorted(record) == sorted(SAVED_MODEL_FILES)
    _assert_same_files(path)  # the record lives beside the SavedModel, not in it
    damaged = bytearray(FILES[BIG])
    damaged[1000] ^= 1  # same size: only the hash can tell
    (path / BIG).write_bytes(bytes(damaged))
    with pytest.raises(dl.CheckpointDownloadError) as info:
        _download(tmp_path, "http://127.0.0.1:9")  # a cache hit: no network needed
    msg = str(info.value)
    assert f"{BIG} has sha256" in msg and "removed" in msg
    assert f"simclrv2 zoo download {NAME} --stage {STAGE}" in msg
    assert not path.exists() and not dl.manifest_path(path).exists()
    assert [p.name for p in path.parent.iterdir()] == ["saved_model.lock"]  # nothing half-deleted
    with serve() as (server, base):
        _assert_same_files(_download(tmp_path, base))


def test_truncated_cache_file_is_not_listed_as_cached(tmp_path):
    with serve() as (server, base):
        path = _download(tmp_path, base)
    checkpoint = get_checkpoint(NAME, STAGE)
    assert dl.cache_status(checkpoint, tmp_path) == "complete"
    (path / BIG).write_bytes(FILES[BIG][:1000])
    assert dl.cache_status(checkpoint, tmp_path) == "damaged"
    assert not dl.is_cached(checkpoint, tmp_path)
    with pytest.raises(dl.CheckpointDownloadError, match=f"{BIG} has 1000 bytes, 300000 were"):
        _download(tmp_path, "http://127.0.0.1:9")
    assert dl.cache_status(checkpoint, tmp_path) == "absent"


def test_hand_placed_copy_is_recorded_on_first_use(tmp_path, capsys):
    final = _final(tmp_path)
    for rel, body in FILES.items():
        (final / rel).parent.mkdir(parents=True, exist_ok=True)
        (final / rel).write_bytes(body)
    assert _download(tmp_path, "http://127.0.0.1:9") == final
    assert "recorded the sha256" in capsys.readouterr().err
    assert _record(final)[BIG]["sha256"] == hashlib.sha256(FILES[BIG]).hexdigest()
    assert _download(tmp_path, "http://127.0.0.1:9") == final  # now checked, and it matches
    (final / "saved_model.pb").write_bytes(b"x" * len(FILES["saved_model.pb"]))
    with pytest.raises(dl.CheckpointDownloadError, match="saved_model.pb has sha256"):
        _download(tmp_path, "http://127.0.0.1:9")
