"""A real S3-protocol server on localhost for tests: moto's server mode (``moto[server]``, the ``test`` extra).

:class:`S3Server` runs moto's WSGI app in a thread of the test process, so its
buckets live in this process and survive :meth:`S3Server.stop` /
:meth:`S3Server.start` on the same port: a storage outage, then recovery.
:func:`s3_env` is the environment that points boto3, pyarrow (and so lxsweep
and Ray, in this process and in every process started with it) at it.

Two shims sit between pyarrow 26's AWS SDK and moto 5.2.1 (both moto bugs,
https://github.com/getmoto/moto/issues/10055): the SDK uploads parts with
``Transfer-Encoding: chunked`` and ``aws-chunked`` bodies that moto's server
stores as empty objects, so the request body is de-chunked here; and moto names
the CompleteMultipartUpload result ``CompleteMultipartUploadResponse``, which
the SDK rejects, so it is renamed to ``CompleteMultipartUploadResult``.
"""
from __future__ import annotations

import io
import logging
import socket
from typing import Callable

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dechunk(data: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body: ``<hex size>[;...]\\r\\n<bytes>\\r\\n`` ... ``0\\r\\n<trailers>``."""
    buf, out = io.BytesIO(data), bytearray()
    while True:
        size = int(buf.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += buf.read(size)
        buf.read(2)


def _pyarrow_compatible(app: Callable) -> Callable:
    def wrapped(environ: dict, start_response: Callable):
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            data = environ["wsgi.input"].read()  # werkzeug has undone the HTTP chunking
            del environ["HTTP_TRANSFER_ENCODING"]
            if environ.get("HTTP_CONTENT_ENCODING") == "aws-chunked":
                data = _dechunk(data)
                for k in ("HTTP_CONTENT_ENCODING", "HTTP_X_AMZ_DECODED_CONTENT_LENGTH", "HTTP_X_AMZ_TRAILER"):
                    environ.pop(k, None)
                environ["HTTP_X_AMZ_CONTENT_SHA256"] = "UNSIGNED-PAYLOAD"
            environ["CONTENT_LENGTH"], environ["wsgi.input"] = str(len(data)), io.BytesIO(data)
        got: dict = {}

        def capture(status, headers, exc_info=None):
            got["status"], got["headers"] = status, headers

        body = b"".join(app(environ, capture))
        headers = got["headers"]
        if environ["REQUEST_METHOD"] == "POST" and "uploadId=" in environ.get("QUERY_STRING", ""):
            body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(got["status"], headers)
        return [body]
    return wrapped


class S3Server:
    """moto's S3 server on ``127.0.0.1:port`` in a thread; stop and start again at will (the data stays)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._thread = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request

    def start(self) -> "S3Server":
        import threading

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app = _pyarrow_compatible(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # the port is free for start() again at once
            self._thread.join()
            self._server = self._thread = None

    def env(self) -> dict[str, str]:
        return s3_env(self.endpoint)

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=name)


def s3_env(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint for boto3 and pyarrow (AWS_ENDPOINT_URL), inherited by Ray's processes."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
