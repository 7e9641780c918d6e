"""An object store that costs what object storage costs, for the benchmarks and the demo.

Remote object storage is bound by latency and by bandwidth; a folder on loopback is
neither. This module is a small S3-compatible server over a local folder
(``ROOT/<bucket>/<key>``) that charges every request what a real endpoint does, so that
every loader compared against it pays the same price:

- **latency**: each request waits ``latency_ms`` before its first byte;
- **one bandwidth budget for the whole endpoint**: every response body passes one
  token bucket of ``bandwidth_mb_s`` (MB/s, all connections together), in chunks of
  64 KiB, so concurrent transfers share it fairly and opening more connections buys
  nothing (an optional ``per_connection_mb_s`` caps each request as well);
- **a cap on concurrent requests** (``concurrency``): requests beyond it queue;
- ``If-Match`` as S3 answers it (412 when the object's ETag differs);
- **counters taken at the endpoint**, not from any client's own bookkeeping: requests
  by kind, GETs, body bytes served, and the server's CPU seconds.

It speaks the part of S3 that fsspec/s3fs, boto3 (Mosaic Streaming, LitData) and plain
HTTP (WebDataset's ``curl``) use: GetObject with ``Range``, HeadObject, ListObjectsV2,
PutObject (``aws-chunked`` bodies included), DeleteObject(s), CreateBucket, HeadBucket.
Signatures are not checked. A second, *direct* listener serves the same folder with no
charges and no counting, for setting data up and for measuring the server's own ceiling
(the endpoint must not be the bottleneck it emulates: see ``measure_ceiling``). It is
plain asyncio streams, no web framework: about 0.3 ms of CPU a ranged GET here, 3,500
GETs/s on one core (aiohttp's server took twice the CPU a request).

``GET /_endpoint/stats`` returns the counters as JSON, ``POST /_endpoint/reset`` zeroes
them. ``EmulatedObjectStore`` runs the server in its own process;
``python -m isloader.demo.endpoint ROOT`` runs it in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["EndpointModel", "EndpointStats", "EmulatedObjectStore", "serve", "measure_ceiling"]

_CREDENTIALS = {"key": "isloader-demo", "secret": "isloader-demo"}
_CHUNK = 64 << 10
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class EndpointModel:
    """What one request costs at the emulated endpoint.

    Args:
        latency_ms: wait before the first byte of every response (default 20 ms, the
            order of S3's first-byte latency).
        bandwidth_mb_s: MB/s (1e6 bytes) shared by every connection (default 25); 0 is
            unlimited.
        concurrency: requests served at once; more queue (default 64).
        per_connection_mb_s: optional cap of each request's own rate (0: none).
    """

    latency_ms: float = 20.0
    bandwidth_mb_s: float = 25.0
    concurrency: int = 64
    per_connection_mb_s: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.bandwidth_mb_s < 0 or self.per_connection_mb_s < 0:
            raise ValueError("latency and bandwidths must be >= 0")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    def describe(self) -> str:
        """One line for reports."""
        bandwidth = f"{self.bandwidth_mb_s:g} MB/s total" if self.bandwidth_mb_s else "no cap"
        return f"{self.latency_ms:g} ms/request, {bandwidth}, {self.concurrency} concurrent"


@dataclass
class EndpointStats:
    """What the endpoint served since its last reset (counted by the server)."""

    requests: int = 0
    gets: int = 0
    heads: int = 0
    lists: int = 0
    puts: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    cpu_seconds: float = 0.0  # the server process's CPU time (not reset)

    def minus(self, earlier: EndpointStats) -> EndpointStats:
        """The difference ``self - earlier`` (what was served in between)."""
        values = {k: getattr(self, k) - getattr(earlier, k) for k in asdict(self)}
        return EndpointStats(**values)


# -- the server ------------------------------------------------------------------------


class _Link:
    """One shared link: byte transfers reserve time on it in arrival order."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._free_at = 0.0

    def reserve(self, now: float, nbytes: int) -> float:
        """When ``nbytes`` offered at ``now`` have passed the link."""
        if not self.rate:
            return now
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.rate
        return self._free_at


class _Folder:
    """The objects: ``root/<bucket>/<key>`` files, with S3's view of them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, bucket: str, key: str = "") -> Path:
        target = (self.root / bucket / key).resolve()
        base = (self.root / bucket).resolve()
        if base.parent != self.root.resolve() or (key and base not in target.parents):
            raise PermissionError(f"{bucket}/{key} leaves the store")
        return target

    def keys(self, bucket: str) -> list[str]:
        """Every key of ``bucket``, sorted; walked afresh (files may be placed directly)."""
        base = self.path(bucket)
        found = []
        for folder, _, files in os.walk(base):
            for name in files:
                if not name.startswith(".tmp-"):
                    found.append(os.path.relpath(os.path.join(folder, name), base))
        return sorted(k.replace(os.sep, "/") for k in found)


def _etag(st: os.stat_result) -> str:
    """Changes whenever the file is rewritten (size, mtime or inode)."""
    digest = hashlib.md5(f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}".encode()).hexdigest()
    return f'"{digest}"'


def _iso(mtime: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a ``Range: bytes=...`` header; None for the whole object.

    Raises:
        ValueError: a range this server cannot satisfy (answered 416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise ValueError(header)
    first, _, last = spec.strip().partition("-")
    if not first:
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ValueError(header)
    return start, end


def _decode_aws_chunked(body: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body: ``<hex>[;ext]\\r\\n<data>\\r\\n``... ``0``."""
    out, pos = bytearray(), 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


@dataclass
class _Request:
    """One parsed HTTP request (the header names in lower case)."""

    method: str
    path: str  # unquoted
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Reply:
    """What to answer: a status, headers and a body (``paced``: through the link)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    paced: bool = False
    length: int | None = None  # Content-Length when it is not the body's (HEAD)


_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 403: "Forbidden",
            404: "Not Found", 412: "Precondition Failed", 416: "Range Not Satisfiable",
            501: "Not Implemented"}  # fmt: skip


def _error(status: int, code: str, message: str) -> _Reply:
    text = (
        f"<?xml version='1.0'?><Error><Code>{code}</Code>"
        f"<Message>{escape(message)}</Message></Error>"
    )
    return _Reply(status, text.encode(), {"Content-Type": "application/xml"})


def _xml(text: str) -> _Reply:
    return _Reply(200, text.encode(), {"Content-Type": "application/xml"})


class _Service:
    """The requests of one listener (charged and counted, or direct)."""

    def __init__(self, folder: _Folder, model: EndpointModel | None, stats: EndpointStats) -> None:
        self.folder = folder
        self.model = model
        self.stats = stats
        self._gate = asyncio.Semaphore(model.concurrency) if model else None
        self._link = _Link(model.bandwidth_mb_s * 1e6 if model else 0.0)

    async def serve(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        """Answer one request: latency first, the body through the link, all of it while
        holding one of the endpoint's concurrent slots."""
        if request.path.startswith("/_endpoint/"):
            await _write(writer, self._control(request))
            return
        if self._gate is None:
            await self._answer(request, writer)
            return
        async with self._gate:
            self.stats.requests += 1
            if self.model and self.model.latency_ms:
                await asyncio.sleep(self.model.latency_ms / 1000)
            await self._answer(request, writer)

    async def _answer(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        reply = self._dispatch(request)
        if not reply.paced:
            await _write(writer, reply)
            return
        await _write(writer, _Reply(reply.status, b"", reply.headers, length=len(reply.body)))
        await self._send(writer, reply.body)
        self.stats.bytes_sent += len(reply.body)

    def _control(self, request: _Request) -> _Reply:
        if request.path == "/_endpoint/stats":
            self.stats.cpu_seconds = time.process_time()
            return _Reply(200, json.dumps(asdict(self.stats)).encode())
        if request.path == "/_endpoint/reset" and request.method == "POST":
            for name in asdict(self.stats):
                setattr(self.stats, name, type(getattr(self.stats, name))())
            return _Reply(200, b'{"reset": true}')
        return _error(404, "NoSuchKey", request.path)

    def _dispatch(self, request: _Request) -> _Reply:
        parts = request.path.lstrip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        method = request.method
        try:
            if not bucket:
                return self._list_buckets()
            if not key:
                return self._bucket(request, bucket)
            if method in ("GET", "HEAD"):
                return self._get(request, bucket, key, head=method == "HEAD")
            if method == "PUT":
                return self._put(request, bucket, key)
            if method == "DELETE":
                self.folder.path(bucket, key).unlink(missing_ok=True)
                return _Reply(204)
        except PermissionError as exc:
            return _error(403, "AccessDenied", str(exc))
        return _error(501, "NotImplemented", f"{method} {request.path}")

    def _list_buckets(self) -> _Reply:
        names = sorted(p.name for p in self.folder.root.iterdir() if p.is_dir())
        items = "".join(
            f"<Bucket><Name>{escape(n)}</Name><CreationDate>{_iso(0)}</CreationDate></Bucket>"
            for n in names
        )
        return _xml(
            f"<?xml version='1.0'?><ListAllMyBucketsResult xmlns='{_NS}'>"
            f"<Owner><ID>emulated</ID></Owner><Buckets>{items}</Buckets></ListAllMyBucketsResult>"
        )

    def _bucket(self, request: _Request, bucket: str) -> _Reply:
        base = self.folder.path(bucket)
        method, query = request.method, request.query
        if method == "PUT":
            base.mkdir(parents=True, exist_ok=True)
            return _Reply(200)
        if not base.is_dir():
            return _error(404, "NoSuchBucket", bucket)
        if method == "HEAD":
            return _Reply(200)
        if method == "POST" and "delete" in query:
            return self._delete_many(request, bucket)
        if method == "GET" and "location" in query:
            return _xml(f"<?xml version='1.0'?><LocationConstraint xmlns='{_NS}'/>")
        if method == "GET":
            self.stats.lists += 1
            return self._list(bucket, query)
        if method == "DELETE":
            shutil.rmtree(base)
            return _Reply(204)
        return _error(501, "NotImplemented", f"{method} {request.path}")

    def _list(self, bucket: str, query: dict[str, str]) -> _Reply:
        """ListObjectsV2 (and V1's ``marker``), with prefix, delimiter and pages."""
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        limit = max(1, min(int(query.get("max-keys", 1000)), 1000))
        after = query.get("start-after", "") or query.get("marker", "")
        if token := query.get("continuation-token"):
            after = max(after, base64.urlsafe_b64decode(token.encode()).decode())
        keys = [k for k in self.folder.keys(bucket) if k.startswith(prefix) and k > after]
        contents, prefixes, last = [], [], ""
        for k in keys:
            if len(contents) + len(prefixes) >= limit:
                break
            rest = k[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if not prefixes or prefixes[-1] != common:
                    prefixes.append(common)
                last = k
                continue
            st = self.folder.path(bucket, k).stat()
            contents.append(
                f"<Contents><Key>{escape(k)}</Key><LastModified>{_iso(st.st_mtime)}"
                f"</LastModified><ETag>{escape(_etag(st))}</ETag><Size>{st.st_size}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
            last = k
        truncated = bool(last) and last != keys[-1] if keys else False
        if truncated and delimiter and prefixes:
            last = max(last, prefixes[-1] + "\U0010ffff")  # skip the rest of that prefix
        token = base64.urlsafe_b64encode(last.encode()).decode() if truncated else ""
        return _xml(
            f"<?xml version='1.0'?><ListBucketResult xmlns='{_NS}'><Name>{escape(bucket)}</Name>"
            f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
            f"<MaxKeys>{limit}</MaxKeys><Delimiter>{escape(delimiter)}</Delimiter>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{token}</NextContinuationToken>" if token else "")
            + "".join(contents)
            + "".join(
                f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
            )
            + "</ListBucketResult>"
        )

    def _get(self, request: _Request, bucket: str, key: str, head: bool) -> _Reply:
        path = self.folder.path(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return _Reply(404) if head else _error(404, "NoSuchKey", key)
        if not path.is_file():
            return _Reply(404) if head else _error(404, "NoSuchKey", key)
        headers = {
            "ETag": _etag(st),
            "Last-Modified": formatdate(st.st_mtime, usegmt=True),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        wanted = request.headers.get("if-match")
        if wanted is not None and wanted.strip() not in ("*", headers["ETag"]):
            return _Reply(412) if head else _error(412, "PreconditionFailed", key)
        if head:
            self.stats.heads += 1
            return _Reply(200, b"", headers, length=st.st_size)
        self.stats.gets += 1
        try:
            span = _parse_range(request.headers.get("range"), st.st_size)
        except ValueError:
            return _error(416, "InvalidRange", request.headers.get("range", ""))
        start, end = span if span is not None else (0, st.st_size)
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), end - start, start)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.st_size}"
        return _Reply(206 if span is not None else 200, data, headers, paced=True)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """The body through the shared link (and the request's own cap), chunk by chunk."""
        loop = asyncio.get_running_loop()
        own = self.model.per_connection_mb_s * 1e6 if self.model else 0.0
        own_free = loop.time()
        view = memoryview(data)
        for pos in range(0, len(data), _CHUNK):
            chunk = view[pos : pos + _CHUNK]
            now = loop.time()
            done = self._link.reserve(now, len(chunk))
            if own:
                own_free = max(own_free, now) + len(chunk) / own
                done = max(done, own_free)
            if done > now:
                await asyncio.sleep(done - now)
            writer.write(chunk)
            await writer.drain()

    def _put(self, request: _Request, bucket: str, key: str) -> _Reply:
        if "uploadId" in request.query or "uploads" in request.query:
            return _error(501, "NotImplemented", "multipart uploads: use the direct listener")
        body = request.body
        headers = request.headers
        if "aws-chunked" in headers.get("content-encoding", "") or headers.get(
            "x-amz-decoded-content-length"
        ):
            body = _decode_aws_chunked(body)
        if not self.folder.path(bucket).is_dir():
            return _error(404, "NoSuchBucket", bucket)
        path = self.folder.path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        tmp.write_bytes(body)
        os.replace(tmp, path)
        self.stats.puts += 1
        self.stats.bytes_received += len(body)
        return _Reply(200, b"", {"ETag": _etag(path.stat())})

    def _delete_many(self, request: _Request, bucket: str) -> _Reply:
        from xml.sax.saxutils import unescape

        keys = re.findall(r"<Key>(.*?)</Key>", request.body.decode(), flags=re.S)
        deleted = []
        for key in keys:
            key = unescape(key)
            self.folder.path(bucket, key).unlink(missing_ok=True)
            deleted.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
        return _xml(
            f"<?xml version='1.0'?><DeleteResult xmlns='{_NS}'>{''.join(deleted)}</DeleteResult>"
        )


async def _write(writer: asyncio.StreamWriter, reply: _Reply) -> None:
    """The status line, the headers and (unless paced) the body."""
    length = reply.length if reply.length is not None else len(reply.body)
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in reply.headers.items()]
    lines.append(f"Content-Length: {length}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
    await writer.drain()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> _Request | None:
    """One request off a keep-alive connection (None at its end); a client that asks
    ``Expect: 100-continue`` (botocore's uploads) is told to send its body."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        body = b"".join(parts)
    split = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    return _Request(method, unquote(split.path), query, headers, body)


def _handler(service: _Service):
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader, writer)) is not None:
                await service.serve(request, writer)
                if request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request
        finally:
            writer.close()

    return connection


async def _serve(root: Path, model: EndpointModel, port: int, direct_port: int) -> None:
    folder = _Folder(root)
    stats = EndpointStats()
    servers = []
    for service, wanted in (
        (_Service(folder, model, stats), port),
        (_Service(folder, None, EndpointStats()), direct_port),
    ):
        server = await asyncio.start_server(
            _handler(service), "127.0.0.1", wanted, backlog=1024, limit=1 << 20
        )
        servers.append(server)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"port": ports[0], "direct_port": ports[1]}), flush=True)
    await asyncio.Event().wait()


def serve(root: str, model: EndpointModel, port: int = 0, direct_port: int = 0) -> None:
    """Serve ``root`` until interrupted; prints ``{"port": P, "direct_port": D}`` first."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(Path(root), model, port, direct_port))


# -- the client side --------------------------------------------------------------------


class EmulatedObjectStore:
    """``with EmulatedObjectStore(EndpointModel(20, 25)) as s3: ...``: the server in its
    own process over ``root`` (a temporary folder by default, removed on exit).

    ``storage_options`` reach it through the charged listener (what a loader sees),
    ``direct_options`` through the direct one (uploads, set-up); ``stats()`` and
    ``reset()`` read and zero the counters; ``env`` holds the variables that point boto3
    clients (Mosaic Streaming, LitData) at it.
    """

    def __init__(self, model: EndpointModel | None = None, *, root: str | None = None) -> None:
        self.model = model or EndpointModel()
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="isloader-s3-"))
        self._proc: subprocess.Popen | None = None
        self.endpoint = self.direct_endpoint = ""

    def __enter__(self) -> EmulatedObjectStore:
        m = self.model
        args = [
            sys.executable, "-m", "isloader.demo.endpoint", str(self.root),
            "--latency-ms", str(m.latency_ms), "--bandwidth-mb-s", str(m.bandwidth_mb_s),
            "--concurrency", str(m.concurrency),
            "--per-connection-mb-s", str(m.per_connection_mb_s),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        try:
            assert self._proc.stdout is not None
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the emulated endpoint exited ({self._proc.wait()})")
            ports = json.loads(line)
        except BaseException:
            self.__exit__()
            raise
        self.endpoint = f"http://127.0.0.1:{ports['port']}"
        self.direct_endpoint = f"http://127.0.0.1:{ports['direct_port']}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The server process's pid (for CPU and memory readings)."""
        assert self._proc is not None
        return self._proc.pid

    @staticmethod
    def _options(endpoint: str) -> dict[str, Any]:
        return {
            **_CREDENTIALS,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach the charged listener."""
        return self._options(self.endpoint)

    @property
    def direct_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach the direct (free, uncounted) listener."""
        return self._options(self.direct_endpoint)

    @property
    def env(self) -> dict[str, str]:
        """Environment for boto3- and obstore-based clients (``AWS_ENDPOINT_URL``,
        ``S3_ENDPOINT_URL``; ``AWS_ALLOW_HTTP``: the endpoint is plain HTTP, as MinIO's
        often is)."""
        return {
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": _CREDENTIALS["key"],
            "AWS_SECRET_ACCESS_KEY": _CREDENTIALS["secret"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT_URL": self.endpoint,
        }

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (a folder under the root); returns ``s3://name``."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return f"s3://{name}"

    def http_url(self, uri: str) -> str:
        """The charged listener's plain HTTP URL of ``s3://bucket/key`` (for ``curl``)."""
        return f"{self.endpoint}/{uri.removeprefix('s3://')}"

    def local_path(self, uri: str) -> Path:
        """Where ``s3://bucket/key`` lives on disk (for copying data in without charge)."""
        return self.root / uri.removeprefix("s3://")

    def stats(self) -> EndpointStats:
        """The endpoint's counters now (requests, GETs, bytes, server CPU seconds)."""
        with urllib.request.urlopen(f"{self.endpoint}/_endpoint/stats", timeout=30) as reply:
            return EndpointStats(**json.loads(reply.read()))

    def reset(self) -> None:
        """Zero the endpoint's counters."""
        request = urllib.request.Request(f"{self.endpoint}/_endpoint/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[EndpointStats]]:
        """``with s3.counting() as got: ...`` then ``got[0]`` is what was served inside."""
        out: list[EndpointStats] = []
        before = self.stats()
        yield out
        out.append(self.stats().minus(before))


def measure_ceiling(
    s3: EmulatedObjectStore, uri: str, *, seconds: float = 3.0, clients: int = 64
) -> dict[str, float]:
    """The server's own ceiling: ranged 4 KiB GETs per second on the direct listener, from
    ``clients`` concurrent connections of a separate load process, and the server CPU
    seconds per GET. The emulated cost model is only honest while this stays well
    above the request rate a loader asks of it."""
    code = _LOAD_SCRIPT.format(
        url=f"{s3.direct_endpoint}/{uri.removeprefix('s3://')}",
        seconds=seconds,
        clients=clients,
    )
    before = s3.stats().cpu_seconds
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cpu = s3.stats().cpu_seconds - before
    done, wall = json.loads(out.stdout)
    return {"gets_per_s": done / wall, "server_cpu_ms_per_get": 1e3 * cpu / max(done, 1)}


_LOAD_SCRIPT = """
import asyncio, json, random, time, aiohttp
async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={clients})) as s:
        async with s.head("{url}") as r:
            size = int(r.headers["Content-Length"])
        done, start = 0, time.perf_counter()
        async def worker():
            nonlocal done
            while time.perf_counter() - start < {seconds}:
                a = random.randrange(0, max(1, size - 4096))
                async with s.get("{url}", headers={{"Range": f"bytes={{a}}-{{a + 4095}}"}}) as r:
                    await r.read()
                done += 1
        await asyncio.gather(*[worker() for _ in range({clients})])
        print(json.dumps([done, time.perf_counter() - start]))
asyncio.run(main())
"""


def main() -> None:
    """``python -m isloader.demo.endpoint ROOT``: serve a folder in the foreground."""
    parser = argparse.ArgumentParser(description="an emulated S3 endpoint over a folder")
    parser.add_argument("root")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb-s", type=float, default=25.0, help="total, MB/s")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-connection-mb-s", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--direct-port", type=int, default=0)
    args = parser.parse_args()
    model = EndpointModel(
        args.latency_ms, args.bandwidth_mb_s, args.concurrency, args.per_connection_mb_s
    )
    serve(args.root, model, args.port, args.direct_port)


if __name__ == "__main__":
    main()
