"""What several resources read from a request the same way: row ids, slugs, keyset cursors, CSV uploads."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Annotated, Any

from fastapi import HTTPException, Path, Query, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from newsletter.db import MAX_ID
from newsletter.web.api.schemas import SLUG_PATTERN

# Annotated, not `= Path(...)` defaults: FastAPI copies an Annotated parameter's FieldInfo for each use,
# while a shared default instance takes the name of the last parameter it was declared for.
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN)]
Cursor = Annotated[int | None, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page.")]
UPLOAD_MEMORY = 4 * 1024 * 1024  # larger uploads spill to a temporary file
MAX_UPLOAD = 512 * 1024 * 1024  # a CSV of several million subscribers; anything larger is refused with 413
_CHUNK = 64 * 1024


def csv_body(description: str) -> dict[str, Any]:
    """`openapi_extra` of a route whose body is a CSV file, read with `csv_upload`."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
            "description": f"{description} The raw body, or the `file` field of a multipart form "
            f"(`curl -F file=@people.csv`). At most {MAX_UPLOAD // 2**20} MiB.",
        }
    }


@asynccontextmanager
async def csv_upload(request: Request) -> AsyncIterator[IO[bytes]]:
    """The uploaded file, read from its start: a raw body (`text/csv`, `--data-binary @people.csv`) or the
    `file` field of a multipart form (`-F file=@people.csv`, how every HTTP client uploads files); streamed
    to a temporary file (in memory up to `UPLOAD_MEMORY`) and refused with 413 beyond MAX_UPLOAD."""
    with (
        tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY) as spool,
        tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY) as part,
    ):
        yield await _read_upload(request, spool, part)


async def _read_upload(request: Request, spool: IO[bytes], part: IO[bytes]) -> IO[bytes]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
        raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD // 2**20} MiB")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD // 2**20} MiB")
        spool.write(chunk)
    spool.seek(0)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return spool

    async def body() -> AsyncGenerator[bytes, None]:
        while chunk := spool.read(_CHUNK):
            yield chunk

    try:
        form = await MultiPartParser(request.headers, body(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise HTTPException(422, f"not a valid multipart upload: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "the multipart upload has no 'file' field: send it as -F file=@people.csv")
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, part, _CHUNK)
    finally:
        await form.close()
    part.seek(0)
    return part
