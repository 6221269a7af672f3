"""The digest editor's form: its fields to and from a digest, the add/remove/move buttons, the problems per field.

Fields are `title`, `date`, `language`, `intro`, `preheader` (and `slug` for a new digest) and, per item,
`items-N-FIELD` for the item's position N from 0. An item whose fields are all empty (just added, not yet
written) is kept in the form but left out of what is saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from newsletter import digests

ITEM_FIELDS = ("headline", "source", "url", "date", "section", "summary", "image", "image_alt")
TOP_FIELDS = ("title", "date", "slug", "language", "intro", "preheader")
MAX_ITEMS = 100  # 8 fields each stays under the 1,000 form fields Starlette parses
_ITEM_KEY = re.compile(r"^items-(\d{1,3})-([a-z_]+)$")
_MOVE = re.compile(r"^(remove|up|down):(\d{1,3})$")


@dataclass
class DigestForm:
    """What the editor shows: text as typed, problems by field path (`title`, `items.2.url`)."""

    top: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TOP_FIELDS, ""))
    items: list[dict[str, str]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    @classmethod
    def blank(cls) -> DigestForm:
        return cls(items=[dict.fromkeys(ITEM_FIELDS, "")])

    @classmethod
    def of(cls, digest: digests.Digest) -> DigestForm:
        data = digest.model_dump(mode="json")
        top = {name: str(data.get(name) or "") for name in TOP_FIELDS}
        items = [{name: str(item.get(name) or "") for name in ITEM_FIELDS} for item in data["items"]]
        return cls(top=top, items=items)

    @classmethod
    def posted(cls, form: Mapping[str, Any]) -> DigestForm:
        top = {name: _text(form.get(name)) for name in TOP_FIELDS}
        by_index: dict[int, dict[str, str]] = {}
        for key, value in form.items():
            match = _ITEM_KEY.match(key)
            if match and match[2] in ITEM_FIELDS and int(match[1]) < MAX_ITEMS:
                by_index.setdefault(int(match[1]), dict.fromkeys(ITEM_FIELDS, ""))[match[2]] = _text(value)
        return cls(top=top, items=[by_index[index] for index in sorted(by_index)])

    def apply(self, action: str) -> bool:
        """Do what a button asks (add, remove:N, up:N, down:N); True when the items changed."""
        if action == "add" and len(self.items) < MAX_ITEMS:
            self.items.append(dict.fromkeys(ITEM_FIELDS, ""))
            return True
        match = _MOVE.match(action)
        if match is None or int(match[2]) >= len(self.items):
            return False
        index = int(match[2])
        other = {"remove": index, "up": index - 1, "down": index + 1}[match[1]]
        if match[1] == "remove":
            del self.items[index]
            if not self.items:
                self.items.append(dict.fromkeys(ITEM_FIELDS, ""))
            return True
        if not 0 <= other < len(self.items):
            return False
        self.items[index], self.items[other] = self.items[other], self.items[index]
        return True

    def validate(self, *, slug: str | None = None) -> digests.Digest | None:
        """The digest these fields make (under `slug` when editing one), or None with `problems` filled in."""
        kept = [index for index, item in enumerate(self.items) if any(value.strip() for value in item.values())]
        data: dict[str, Any] = {name: value for name, value in self.top.items() if value.strip()}
        data["items"] = [{k: v for k, v in self.items[index].items() if v.strip()} for index in kept]
        if slug is not None:
            data["slug"] = slug
        digest, problems = digests.check_fields(data)
        self.problems = {_form_key(key, kept): message for key, message in problems.items()}
        return digest

    def problem(self, key: str) -> str | None:
        return self.problems.get(key)

    def problem_list(self) -> list[tuple[str, str]]:
        """The problems as (anchor id, "where: what") for the summary above the form."""
        listed = []
        for key, message in self.problems.items():
            parts = key.split(".")
            if parts[0] == "items" and len(parts) == 3:
                number = int(parts[1]) + 1
                listed.append((f"items-{parts[1]}-{parts[2]}", f"Item {number}, {_label(parts[2])}: {message}"))
            else:
                listed.append((parts[0] if parts[0] in TOP_FIELDS else "items", f"{_label(parts[0])}: {message}"))
        return listed


def _form_key(key: str, kept: list[int]) -> str:
    parts = key.split(".")
    if parts[0] == "items" and len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) < len(kept):
        return ".".join(["items", str(kept[int(parts[1])]), *parts[2:]])
    return key


def _label(name: str) -> str:
    return {"url": "URL", "image": "Image URL", "image_alt": "Image description", "items": "Items"}.get(
        name, name.replace("_", " ").capitalize()
    )


def _text(value: Any) -> str:
    # Browsers send CRLF in textareas; the digest is stored with LF, as the Markdown reader reads it.
    return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else ""
