"""The demo's web app: a small FastAPI app around :class:`DemoService` and one static HTML/JS page.

FastAPI + a plain canvas page rather than Gradio: drawing a box is a mousedown/drag/mouseup on a
canvas we own (Gradio's image input has no box tool of its own), the page stays one file the test can
drive with real mouse events, and the dependencies stay small (fastapi, uvicorn, python-multipart).

Every handler error that is the user's (``UserError``) comes back as HTTP 400 ``{"error": message}``;
anything else as HTTP 500 with the exception's one line; the server keeps serving either way.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time

import socket
from pathlib import Path
from typing import Any

from samdistill.errors import UserError

STATIC = Path(__file__).with_name("static")


def _fastapi():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("the demo needs fastapi and uvicorn: pip install 'samdistill[demo]'") from None


def create_app(service):
    """The FastAPI app serving ``service`` (see the routes below)."""
    _fastapi()
    from fastapi import FastAPI, File, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(title="samdistill demo", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    async def _read(upload: UploadFile, limit: int) -> bytes:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise UserError(f"{upload.filename} is larger than {limit / 2**20:.0f} MB, the demo's limit")
        return data

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise UserError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise UserError("the request body must be a JSON object")
        return body

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        return service.describe()

    @app.post("/api/image")
    async def upload_image(file: UploadFile = File(...)):
        return service.add_upload(await _read(file, service.max_upload), file.filename or "upload")

    @app.post("/api/dataset/{index}")
    def dataset_image(index: int):
        return service.add_from_dataset(index)

    @app.get("/api/image/{image_id}.png")
    def image_png(image_id: str):
        return Response(service.image_png(image_id), media_type="image/png")

    @app.post("/api/segment")
    async def segment(request: Request):
        body = await _json(request)
        if "image_id" not in body:
            raise UserError("the request names no image_id")
        return service.segment(str(body["image_id"]), box=body.get("box"), points=body.get("points"),
                               labels=body.get("labels"))

    @app.post("/api/volume")
    async def upload_volume(file: UploadFile = File(...)):
        return service.add_volume(await _read(file, service.max_volume), file.filename or "volume.nii.gz")

    @app.post("/api/volume/{vid}/slice/{z}")
    def volume_slice(vid: str, z: int):
        return service.volume_slice(vid, z)

    @app.post("/api/volume/{vid}/propagate")
    async def propagate(vid: str, request: Request):
        body = await _json(request)
        return service.start_propagation(vid, str(body.get("model", "")), body.get("box"), int(body.get("slice", -1)))

    @app.get("/api/volume/{vid}/status")
    def volume_status(vid: str):
        return service.volume_status(vid)

    @app.get("/api/volume/{vid}/mask.nii.gz")
    def volume_mask(vid: str):
        data, name = service.volume_mask_nifti(vid)
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


def check_port(host: str, port: int) -> None:
    """A clear error when ``host:port`` cannot be served (in use, or not an address of this machine)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_server(service, host: str = "127.0.0.1", port: int = 7860, log_level: str = "warning"):
    """A ``uvicorn.Server`` for the app (``.run()`` blocks; set ``.should_exit`` to stop it)."""
    _fastapi()
    import uvicorn

    config = uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level, access_log=False)
    return uvicorn.Server(config)
