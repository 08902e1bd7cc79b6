"""Tiny teacher + tiny student behind a real demo server on a free loopback port."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the demo needs fastapi (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def tiny_pair():
    from samdistill.models.zoo import load_model

    teacher = load_model("test_sam")
    student = load_model("test_efficientvit_b0", teacher=teacher).eval()
    return teacher, student


def make_service(tiny_pair, **kw):
    from samdistill.demo.service import DemoService
    from samdistill.deploy.predictor import Predictor

    teacher, student = tiny_pair
    return DemoService({"test_sam": Predictor.from_torch(teacher, "test_sam"),
                        "student": Predictor.from_torch(student, "student")}, **kw)


@pytest.fixture()
def service(tiny_pair):
    return make_service(tiny_pair)


@pytest.fixture()
def server(tiny_pair):
    """``(base_url, service)`` of a demo server running in a thread; stopped after the test."""
    from samdistill.demo.server import free_port, make_server

    svc = make_service(tiny_pair)
    port = free_port()
    srv = make_server(svc, port=port)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the demo server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", svc
    srv.should_exit = True
    thread.join(timeout=10)


def disk_image(h: int = 120, w: int = 160, cy: int = 60, cx: int = 84, r: int = 28, dtype=np.uint8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), 30, dtype=np.float64)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 220
    if dtype == np.uint16:
        return (img * 257).astype(np.uint16)
    return img.astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file (stdlib only)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
