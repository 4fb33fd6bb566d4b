"""Slow clients against a real uvicorn server (in a thread, on a port the system picks).

A client that sends its headers too slowly, or nothing at all, is disconnected; one that sends
its body too slowly gets 408; an idle keep-alive connection is closed. Each check waits for the
server's verdict with a generous socket timeout, so the outcome does not depend on timing.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from breastpath.serve.app import ServeLimits, create_app
from breastpath.serve.server import bind, make_server

LIMITS = ServeLimits(header_timeout_s=0.3, body_timeout_s=0.3, keep_alive_s=1.0)


@pytest.fixture(scope="module")
def server_port(predictor):
    sock = bind("127.0.0.1", 0)
    server = make_server(create_app(predictor, limits=LIMITS), limits=LIMITS, access_log=False)
    server.config.log_level = "warning"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(20)


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (30 s at most)."""
    chunks = []
    while True:
        try:
            chunk = conn.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_client_that_sends_nothing_is_disconnected(server_port):
    with _connect(server_port) as conn:
        started = time.monotonic()
        assert _read_all(conn) == b""
        assert time.monotonic() - started < 25  # closed by the server, not by our timeout


def test_headers_sent_a_byte_at_a_time_are_cut_off(server_port):
    with _connect(server_port) as conn:
        request = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        closed = False
        for byte in request:  # each byte resets uvicorn's keep-alive timer, not ours
            try:
                conn.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.01)
        assert closed or _read_all(conn) == b""


def test_a_slow_body_gets_408_and_the_connection_closed(server_port):
    with _connect(server_port) as conn:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n"
        )
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive in time" in answer


def test_an_idle_keep_alive_connection_is_closed(server_port):
    with _connect(server_port) as conn:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(conn)  # the answer, then the close after the idle timeout
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer


def test_requests_still_work(server_port):
    with _connect(server_port) as conn:
        conn.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(conn).startswith(b"HTTP/1.1 200")
