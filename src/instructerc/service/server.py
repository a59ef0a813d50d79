"""Running the service: load a model directory and serve it with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.service.config import ServiceConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def require_serve_extra() -> None:
    """An :class:`InputError` with the install command when FastAPI or uvicorn is missing."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"serving needs {' and '.join(missing)}: pip install 'instructerc[serve]'")


def serve(
    model_dir: Path,
    config: ServiceConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: Any = None,
    threads: int | None = None,
    log_level: str = "info",
    access_log: bool = True,
    trust_remote_code: bool = False,
) -> None:
    """Serve ``model_dir`` until interrupted (Ctrl-C or SIGTERM stop it gracefully).

    ``threads`` sets torch's CPU threads for the model (default: torch's choice, one per core).
    """
    require_serve_extra()
    import uvicorn

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    from instructerc.inference.predictor import Predictor
    from instructerc.service.app import create_app

    predictor = Predictor.from_directory(model_dir, device=device, trust_remote_code=trust_remote_code)
    app = create_app(predictor, config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
