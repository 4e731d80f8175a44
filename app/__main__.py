"""`python -m app serve`: make sure a model exists (training one if needed), then serve it.

Every startup failure ends the command with one line on stderr (`catdog: ...`, also logged) and an
exit code that says which kind it was:

  2  invalid settings or arguments (CATDOG_* variables, flags), or no usable model: missing (and
     none can be trained) or a broken export (metadata.json, saved_model.pb, variables), found
     before the port accepts connections
  4  the address cannot be listened on (port in use, not permitted); checked before the model loads
  1  anything else unexpected during startup
(3 is uvicorn's own code for a failed application startup; the checks above run first so that it
does not happen.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from app.bootstrap import BootstrapError, ensure_model
from app.logs import configure_logging
from app.main import create_app, load_model
from app.model_versions import ModelSource
from app.repository_config import ServingConfig, ServingConfigError, parse_serving_config
from app.server import PortUnavailableError, bind_socket, return_freed_memory_to_the_os, serve
from app.settings import Settings
from catdog.repository import SERVING_CONFIG_FILE
from catdog.saved_model import ExportedModel, ModelLoadError

logger = logging.getLogger("catdog")

EXIT_SETTINGS = 2
EXIT_MODEL = 2
EXIT_PORT = 4
EXIT_UNEXPECTED = 1


def settings_problems(exc: ValidationError) -> str:
    """One line naming each bad CATDOG_* variable; cross-field checks name theirs in the message."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        name = "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"CATDOG_{name}: {message}" if name else message)
    return "; ".join(problems)


def check_model(exported: ExportedModel) -> None:
    """Run one blank image through the export: truncated variables fail here, not in the first request."""
    try:
        size = exported.metadata.image_size
        exported.predict(np.zeros((1, size, size, 3), dtype=np.uint8))
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ModelLoadError(
            f"the SavedModel at {exported.model_dir} fails on a test image: {detail}"
        ) from exc


def preload(settings: Settings) -> ExportedModel | None:
    """The export that will answer unpinned requests, loaded and run once. In a repository, the version
    serving.json makes the default; when that one fails and others exist, they are left to the service,
    which refuses it and serves the next (app/model_versions.py): None."""
    source = ModelSource.from_settings(settings)
    if not source.is_repository:
        model = load_model(settings)
        check_model(model)
        return model
    present = source.scan()
    if not present:
        raise ModelLoadError(f"no model version in {source.folder} (expected {source.folder}/<N>/)")
    try:
        text = source.config_bytes()
        config = ServingConfig() if text is None else parse_serving_config(text)
    except (OSError, ServingConfigError) as exc:
        raise ModelLoadError(f"cannot use {source.folder / SERVING_CONFIG_FILE}: {exc}") from exc
    target = config.default_target(present)
    if target not in present:
        raise ModelLoadError(f"default_version {target} is not in {source.folder}")
    try:
        model = load_model(settings, present[target])
        check_model(model)
    except ModelLoadError:
        if len(present) == 1:
            raise
        logger.exception("the default version does not load; trying the others", extra={"version": target})
        return None
    return model


def fail(code: int, message: str) -> int:
    message = " ".join(message.split())  # one line, even where TensorFlow's message has several
    logger.error(message, extra={"exit_code": code})
    print(f"catdog: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="catdog image classification service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve the model over HTTP (settings: CATDOG_* env variables)")
    serve_cmd.add_argument("--host", help="bind address (CATDOG_HOST, default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (CATDOG_PORT, default 8000)")
    serve_cmd.add_argument("--model-dir", type=Path, help="exported model (CATDOG_MODEL_DIR)")
    serve_cmd.add_argument(
        "--model-repository",
        type=Path,
        help="model repository, versions in <it>/catdog/<N> (CATDOG_MODEL_REPOSITORY)",
    )
    serve_cmd.add_argument("--data-dir", type=Path, help="photos to train from if no model (CATDOG_DATA_DIR)")
    serve_cmd.add_argument("--no-auto-train", action="store_true", help="fail instead of training a model")
    args = parser.parse_args(argv)  # bad flags: argparse's usage line and exit code 2

    overrides = {
        "host": args.host,
        "port": args.port,
        "model_dir": args.model_dir,
        "model_repository": args.model_repository,
        "data_dir": args.data_dir,
        "auto_train": False if args.no_auto_train else None,
    }
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        print(f"catdog: invalid settings: {settings_problems(exc)}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(settings.log_level)
    return_freed_memory_to_the_os()
    try:
        # The port first: finding it busy takes a millisecond; the model takes seconds to load.
        sock = bind_socket(settings.host, settings.port)
    except PortUnavailableError as exc:
        return fail(EXIT_PORT, str(exc))
    try:
        try:
            ensure_model(settings)
            # Loaded here rather than in the app's lifespan: a broken export ends the command with one
            # line before a client can connect, not with a traceback from inside uvicorn.
            model = preload(settings)
        except (BootstrapError, ModelLoadError) as exc:
            return fail(EXIT_MODEL, str(exc))
        except Exception as exc:
            return fail(EXIT_UNEXPECTED, f"unexpected startup error: {type(exc).__name__}: {exc}")
        serve(create_app(settings, model), settings, sock)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
