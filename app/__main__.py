"""`python -m app serve`: make sure a model exists (training one if needed), then serve it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from app.bootstrap import BootstrapError, ensure_model
from app.logs import configure_logging
from app.main import create_app, load_model
from app.settings import Settings
from catdog.saved_model import ModelLoadError

logger = logging.getLogger("catdog")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="catdog image classification service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the model over HTTP (settings: CATDOG_* env variables)")
    serve.add_argument("--host", help="bind address (CATDOG_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (CATDOG_PORT, default 8000)")
    serve.add_argument("--model-dir", type=Path, help="exported model (CATDOG_MODEL_DIR)")
    serve.add_argument("--data-dir", type=Path, help="photos to train from if no model (CATDOG_DATA_DIR)")
    serve.add_argument("--no-auto-train", action="store_true", help="fail instead of training a model")
    args = parser.parse_args(argv)

    overrides = {
        "host": args.host,
        "port": args.port,
        "model_dir": args.model_dir,
        "data_dir": args.data_dir,
        "auto_train": False if args.no_auto_train else None,
    }
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"CATDOG_{'_'.join(str(part) for part in error['loc']).upper() or '?'}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"catdog: invalid settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        ensure_model(settings)
        # Loaded here rather than in the app's lifespan: a broken export ends the command with one
        # line and exit code 2 before a port is bound, not with a traceback from inside uvicorn.
        model = load_model(settings)
        uvicorn.run(
            create_app(settings, model),
            host=settings.host,
            port=settings.port,
            log_config=None,  # keep our JSON logging
            timeout_graceful_shutdown=30,
        )
    except (BootstrapError, ModelLoadError) as exc:
        message = " ".join(str(exc).split())  # one line, even where TensorFlow's message has several
        logger.error(message)
        print(f"catdog: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
