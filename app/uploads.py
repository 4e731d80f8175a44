"""Getting image bytes out of a request: multipart `file`/`files` fields or a raw image body.

Everything a client can get wrong here becomes an `APIError` with a 4xx status:
415 for a body or part that is not an image type we read, 413 for too many or too large files,
422 for a missing form field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import APIError, image_bytes_too_large
from catdog.imaging import SUPPORTED_MEDIA_TYPES

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)

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
        raise image_bytes_too_large(upload.filename, len(upload.data), max_bytes)


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
    boundary = _boundary(request)
    if boundary is None:
        raise APIError(400, "malformed_multipart", "the multipart content type has no boundary")
    try:
        form = _FormParts(boundary, max_files)
        # The body streams through the parser; it stops at the first file over the limit.
        async for chunk in request.stream():
            form.write(chunk)
    except _TooManyFilesError as exc:
        if field == "file":
            raise APIError(
                400,
                "too_many_files",
                "POST /predict takes one image in the 'file' field; send several to /predict/batch "
                "as repeated 'files' fields",
                {"max_files": 1},
            ) from exc
        raise APIError(
            413, "too_many_files", f"more than {max_files} files sent", {"max_files": max_files}
        ) from exc
    except (_FormError, FormParserError) as exc:
        raise APIError(400, "malformed_multipart", f"the multipart body cannot be parsed: {exc}") from exc
    if not form.complete:
        # python-multipart drops a part that never ends, which would otherwise look like a missing field.
        raise APIError(
            400, "malformed_multipart", "the multipart body is incomplete: it has no closing boundary"
        )
    values = [part for part in form.parts if part.name == field]
    if not values:
        present = sorted({part.name for part in form.parts})
        raise APIError(
            422,
            "validation_error",
            f"multipart field '{field}' is missing",
            [{"location": ["body", field], "message": "field required", "received_fields": present}],
        )
    uploads = []
    for part in values:
        if part.filename is None:
            raise APIError(
                422,
                "validation_error",
                f"multipart field '{field}' must be a file upload, not a text value",
                [{"location": ["body", field], "message": "expected a file"}],
            )
        declared = media_type(part.content_type)
        check_declared_type(declared, f"file '{part.filename or field}'")
        uploads.append(Upload(part.filename, declared, part.data))
    return uploads


class _FormError(ValueError):
    """A multipart body this service does not take (a nameless part, too many or too large fields)."""


class _TooManyFilesError(_FormError):
    pass


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None  # None: a text field, not a file
    content_type: str
    data: bytes


class _FormParts:
    """The parts of a multipart/form-data body, fed to python-multipart's parser chunk by chunk.

    Starlette's `request.form()` wraps the same parser, but spools every file into a temporary file
    object that is then read back, and costs ~0.2 ms of event-loop time per upload more; the body
    size limit (app/middleware.py) already bounds what is kept here. Its rules are kept: a part is a
    file when its Content-Disposition has a filename; at most `max_files` files and 64 text fields,
    a text field at most 1 MiB; names in UTF-8, else Latin-1.
    """

    MAX_FIELDS = 64
    MAX_FIELD_BYTES = 1024 * 1024

    def __init__(self, boundary: bytes, max_files: int) -> None:
        self.parts: list[_Part] = []
        self.complete = False  # the closing boundary was seen
        self._max_files = max_files
        self._files = self._fields = 0
        self._pending_name = self._pending_value = b""  # a header, as it arrives in pieces
        self._headers: dict[bytes, bytes] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._name = ""
        self._filename: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def _part_begin(self) -> None:
        self._headers, self._chunks, self._size = {}, [], 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._pending_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._pending_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._pending_name.lower()] = self._pending_value
        self._pending_name = self._pending_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise _FormError('a part\'s Content-Disposition header has no "name"')
        self._name = _decode(options[b"name"])
        if b"filename" in options:
            self._files += 1
            if self._files > self._max_files:
                raise _TooManyFilesError(f"more than {self._max_files} files")
            self._filename = _decode(options[b"filename"])
        else:
            self._fields += 1
            if self._fields > self.MAX_FIELDS:
                raise _FormError(f"more than {self.MAX_FIELDS} text fields")
            self._filename = None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._filename is None and self._size > self.MAX_FIELD_BYTES:
            raise _FormError(f"a text field is over {self.MAX_FIELD_BYTES // 1024} KiB")
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self.parts.append(_Part(self._name, self._filename, content_type, data))
        self._chunks = []

    def _end(self) -> None:
        self.complete = True


def _decode(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")
