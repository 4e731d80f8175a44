"""Getting image bytes out of a request: multipart `file`/`files` fields or a raw image body.

Everything a client can get wrong here becomes an `APIError` with a 4xx status:
415 for a body or part that is not an image type we read, 413 for too many or too large files,
422 for a missing form field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from app.errors import APIError
from catdog.imaging import SUPPORTED_MEDIA_TYPES

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
# Bytes kept from the end of a multipart body to find its closing boundary (room for an epilogue).
_TAIL_BYTES = 1024

# Types a client may declare for bytes whose format we then sniff ourselves.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "image/*"})


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str
    data: bytes


def media_type(header: str | None) -> str:
    """'Image/JPEG; charset=x' -> 'image/jpeg'."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_declared_type(declared: str, what: str) -> None:
    if declared in _GENERIC_TYPES or declared in SUPPORTED_MEDIA_TYPES:
        return
    supported = ", ".join(sorted(SUPPORTED_MEDIA_TYPES))
    raise APIError(
        415,
        "unsupported_media_type",
        f"{what} has content type '{declared}', which is not a supported image type",
        {"supported": supported},
    )


def check_size(upload: Upload, max_bytes: int) -> None:
    if len(upload.data) > max_bytes:
        name = f"'{upload.filename}'" if upload.filename else "the image"
        raise APIError(
            413,
            "payload_too_large",
            f"{name} is {len(upload.data)} bytes, over the limit of {max_bytes} bytes",
            {"max_upload_bytes": max_bytes},
        )


async def read_single_image(request: Request, max_bytes: int) -> Upload:
    """POST /predict: multipart with a `file` field, or the image itself as the body."""
    declared = media_type(request.headers.get("content-type"))
    if declared == "multipart/form-data":
        uploads = await _read_form_files(request, field="file", max_files=1)
        upload = uploads[0]
    elif declared.startswith("image/") or declared == "application/octet-stream":
        check_declared_type(declared, "the request body")
        upload = Upload(filename=None, content_type=declared, data=await request.body())
    else:
        raise APIError(
            415,
            "unsupported_media_type",
            f"content type '{declared or '(none)'}' is not accepted: send multipart/form-data with a "
            "'file' field, or the image bytes with an image/* content type",
        )
    check_size(upload, max_bytes)
    return upload


async def read_image_files(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """POST /predict/batch: multipart with one or more `files` fields."""
    declared = media_type(request.headers.get("content-type"))
    if declared != "multipart/form-data":
        raise APIError(
            415,
            "unsupported_media_type",
            f"content type '{declared or '(none)'}' is not accepted: send multipart/form-data "
            "with one or more 'files' fields",
        )
    uploads = await _read_form_files(request, field="files", max_files=max_files)
    for upload in uploads:
        check_size(upload, max_bytes)
    return uploads


def _boundary(request: Request) -> bytes | None:
    match = _BOUNDARY.search(request.headers.get("content-type", ""))
    return match.group(1).encode("latin-1") if match else None


async def _read_form_files(request: Request, field: str, max_files: int) -> list[Upload]:
    # The body streams through the parser; its last bytes are kept to check that it was complete:
    # python-multipart drops a part that never ends, which would otherwise look like a missing field.
    tail = bytearray()
    upstream = request.receive

    async def receive_keeping_tail() -> Message:
        message = await upstream()
        if message["type"] == "http.request":
            tail.extend(message.get("body", b""))
            del tail[:-_TAIL_BYTES]
        return message

    try:
        # Starlette stops parsing at the first file over the limit, before spooling the rest.
        form = await Request(request.scope, receive_keeping_tail).form(max_files=max_files, max_fields=64)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail) and field == "file":
            raise APIError(
                400,
                "too_many_files",
                "POST /predict takes one image in the 'file' field; send several to /predict/batch "
                "as repeated 'files' fields",
                {"max_files": 1},
            ) from exc
        if "Too many files" in str(exc.detail):
            raise APIError(
                413, "too_many_files", f"more than {max_files} files sent", {"max_files": max_files}
            ) from exc
        raise APIError(
            400, "malformed_multipart", f"the multipart body cannot be parsed: {exc.detail}"
        ) from exc
    try:
        boundary = _boundary(request)
        if boundary is None or b"--" + boundary + b"--" not in tail:
            raise APIError(
                400,
                "malformed_multipart",
                "the multipart body is incomplete: it has no closing boundary"
                if boundary
                else "the multipart content type has no boundary",
            )
        values = form.getlist(field)
        if not values:
            present = sorted(set(form.keys()))
            raise APIError(
                422,
                "validation_error",
                f"multipart field '{field}' is missing",
                [{"location": ["body", field], "message": "field required", "received_fields": present}],
            )
        uploads = []
        for value in values:
            if not isinstance(value, UploadFile):
                raise APIError(
                    422,
                    "validation_error",
                    f"multipart field '{field}' must be a file upload, not a text value",
                    [{"location": ["body", field], "message": "expected a file"}],
                )
            declared = media_type(value.content_type)
            check_declared_type(declared, f"file '{value.filename or field}'")
            uploads.append(Upload(value.filename, declared, await value.read()))
        return uploads
    finally:
        await form.close()
