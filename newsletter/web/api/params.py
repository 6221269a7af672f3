"""What several resources read from a request the same way: row ids, slugs, keyset cursors, CSV uploads."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Annotated, Any

from fastapi import Path, Query, Request

from newsletter.web.api.schemas import SLUG_PATTERN

# Annotated, not `= Path(...)` defaults: FastAPI copies an Annotated parameter's FieldInfo for each use,
# while a shared default instance takes the name of the last parameter it was declared for.
MAX_ID = 2**63 - 1  # PostgreSQL's bigint: larger ids are a 422, not a database error
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN)]
Cursor = Annotated[int | None, Query(ge=0, le=MAX_ID, description="`next_cursor` of the previous page.")]
UPLOAD_MEMORY = 4 * 1024 * 1024  # larger uploads spill to a temporary file


def csv_body(description: str) -> dict[str, Any]:
    """`openapi_extra` of a route whose body is a CSV file, read with `csv_upload`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": description,
        }
    }


@asynccontextmanager
async def csv_upload(request: Request) -> AsyncIterator[IO[bytes]]:
    """The request body as a file, read from its start; in memory up to `UPLOAD_MEMORY`, then on disk."""
    with tempfile.SpooledTemporaryFile(max_size=UPLOAD_MEMORY) as upload:
        async for chunk in request.stream():
            upload.write(chunk)
        upload.seek(0)
        yield upload
