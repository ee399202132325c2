"""Test servers for S3BlobStore: moto in server mode, and a loopback proxy that fails on demand.

Both are real HTTP servers on 127.0.0.1 (free ports), so the store's boto3 client is never
patched: what it sends and receives crosses a socket.
"""

from __future__ import annotations

import functools
import http.client
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import boto3

__all__ = ["FailingProxy", "raw_client", "seed", "start_moto"]

_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@contextmanager
def start_moto() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1 and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def seed(bucket: str, keys: list[str], data: bytes = b"x") -> None:
    """Store many objects at once straight into the in-process moto server's memory.

    Set-up only (thousands of PUTs over HTTP take seconds on moto); everything under test
    still goes through the server.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key in keys:
        backend.put_object(bucket, key, data)


@functools.cache
def raw_client(endpoint_url: str) -> Any:
    """A plain boto3 client for set-up and checks (never the store's own; one per endpoint)."""
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class FailingProxy:
    """An HTTP proxy in front of an S3 endpoint that fails the first ``failures`` DeleteObjects.

    ``mode="keys"``: a failing DeleteObjects answers 200 with a per-key ``InternalError`` for
    every other key of the batch, and really deletes the rest (through a plain client), as
    S3 does when some keys of a batch fail. ``mode="http"``: it answers ``503 SlowDown``
    (boto3 retries those, so each attempt counts as one failure). Every other request is
    forwarded as it is. ``requests`` counts what reached the proxy, by S3 operation.
    """

    def __init__(self, upstream: str, *, failures: int, mode: str = "keys") -> None:
        self.upstream = urlsplit(upstream)
        self.failures = failures
        self.mode = mode
        self.requests: Counter[str] = Counter()
        self.refused_keys: list[str] = []
        self._lock = threading.Lock()
        self._raw = raw_client(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation = _operation(self.command, self.path)
                with proxy._lock:
                    proxy.requests[operation] += 1
                    fail = operation == "DeleteObjects" and proxy.failures > 0
                    if fail:
                        proxy.failures -= 1
                if fail and proxy.mode == "http":
                    self._reply(503, _error_xml("SlowDown", "Please reduce your request rate."))
                elif fail:
                    self._reply(200, proxy._partial_delete(self.path, body))
                else:
                    self._forward(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FailingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _partial_delete(self, path: str, body: bytes) -> bytes:
        """Delete every other key of the batch upstream; report the others as failed."""
        bucket = urlsplit(path).path.strip("/").split("/")[0]
        keys = [node.text or "" for node in ET.fromstring(body).iter(f"{_S3_NS}Key")]
        refused, kept = keys[::2], keys[1::2]
        if kept:
            self._raw.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in kept]})
        with self._lock:
            self.refused_keys.extend(refused)
        errors = "".join(
            f"<Error><Key>{escape(key)}</Key><Code>InternalError</Code>"
            "<Message>We encountered an internal error. Please try again.</Message></Error>"
            for key in refused
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{errors}</DeleteResult>'
        ).encode()


def _operation(method: str, path: str) -> str:
    parts = urlsplit(path)
    query = parts.query
    segments = [s for s in parts.path.split("/") if s]
    if method == "POST" and "delete" in query.split("&"):
        return "DeleteObjects"
    if method == "GET" and len(segments) == 1 and "list-type=2" in query:
        return "ListObjectsV2"
    names = {"GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject", "HEAD": "HeadObject"}
    if len(segments) == 1:
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(method, f"{method} bucket")
    return names.get(method, method)


def _error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
