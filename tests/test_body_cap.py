"""The body cap is enforced while the body streams in: a 1 GB chunked upload is refused once it
passes the cap, and the server's memory stays flat."""

from __future__ import annotations

import select
import socket
import time
from urllib.parse import urlparse

import psutil

CHUNK = b"A" * (1 << 20)


def _send_chunked(url: str, path: str, total: int, content_type: str = "application/json",
                  preamble: bytes = b"") -> tuple[bytes, int]:
    """Stream `total` bytes as a chunked POST; stop once the server answers. Returns (reply, bytes sent)."""
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {parsed.hostname}\r\nContent-Type: {content_type}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    if preamble:
        sock.sendall(b"%x\r\n" % len(preamble) + preamble + b"\r\n")
    sent, reply = 0, b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n")
            sent += len(CHUNK)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(30)
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    return reply, sent


def test_a_1gb_chunked_upload_is_refused_with_flat_memory(kiri_server):
    process = psutil.Process()
    before = process.memory_info().rss
    reply, sent = _send_chunked(kiri_server["url"], "/sdapi/v1/png-info", 1 << 30)
    grew = process.memory_info().rss - before
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 300 << 20, f"the server read {sent >> 20} MB before refusing"
    assert grew < 200 << 20, f"memory grew by {grew >> 20} MB"


def test_a_declared_length_over_the_cap_is_refused_before_reading(kiri_server):
    parsed = urlparse(kiri_server["url"])
    started = time.monotonic()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
        sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1073741824\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 10


def test_the_cap_guards_gradio_routes_too(kiri_server):
    part = (b'--kiri\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    reply, _ = _send_chunked(kiri_server["url"], "/gradio_api/upload", 200 << 20,
                             content_type="multipart/form-data; boundary=kiri", preamble=part)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
