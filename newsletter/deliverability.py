"""The pre-send check: what in a digest's email would get it clipped, filtered, or sent against the law.

`check` inspects the complete message a list's subscribers would get (see previews.py), SpamAssassin
included when it is installed. `blocking_errors` is the gate every campaign passes when it is created: the
same structural checks without SpamAssassin, which takes seconds and whose verdict depends on the local
rule set, so it advises (`newsletter digests check`) rather than blocks.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from newsletter import digests, previews, rendering
from newsletter.config import Settings
from newsletter.errors import Unavailable
from newsletter.lists import get_list
from newsletter.models import Digest, MailingList

__all__ = [
    "HTML_ERROR_BYTES",
    "HTML_WARNING_BYTES",
    "SPAM_ERROR",
    "SPAM_WARNING",
    "SUBJECT_MAX",
    "Finding",
    "blocking_errors",
    "check",
    "errors",
    "inspect",
    "spamassassin_findings",
]

# Gmail clips messages whose HTML passes ~102 KB, hiding the footer (and the unsubscribe link) behind a link.
HTML_ERROR_BYTES = 100 * 1024
HTML_WARNING_BYTES = 80 * 1024
SUBJECT_MAX = 78  # RFC 5322's recommended line length; most clients cut subjects about there
SPAM_WARNING = 2.5
SPAM_ERROR = 5.0
SPAMASSASSIN_TIMEOUT = 60
_LINK_SCHEMES = ("http", "https", "mailto")

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One result of the check; `item` is the 1-based number of the digest item it concerns, if any."""

    level: Level
    message: str
    item: int | None = None
    headline: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"item {self.item} ({self.headline}): " if self.item else ""
        return f"{self.level}: {where}{self.message}"


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.level == "error"]


def check(
    session: Session,
    settings: Settings,
    digest_slug: str,
    list_slug: str | None = None,
    *,
    template: str | None = None,
    subject: str | None = None,
    spamassassin: bool = True,
) -> list[Finding]:
    """Check the message a list's subscribers would get for a stored digest, most severe findings first.

    Without `list_slug` the oldest list is used, as in the preview.
    """
    preview = previews.preview_digest(
        session, settings, digest_slug, list_slug, template=template, subject=subject, tracking=True
    )
    digest = digests.get_published(session, digest_slug)
    mailing_list = get_list(session, preview.list_slug)
    findings = inspect(
        subject=preview.subject,
        html_part=preview.html,
        text_part=preview.text,
        unsubscribe_url=preview.unsubscribe_url,
        mailing_list=mailing_list,
        digest=digest,
        links=preview.links,
    )
    if spamassassin:
        findings += spamassassin_findings(preview.message)
    return _sorted(findings)


def blocking_errors(
    digest: Digest,
    lists: Sequence[MailingList],
    subject: str,
    *,
    template_source: str | None = None,
) -> list[str]:
    """The errors that must stop a campaign of this digest to these lists: the gate at campaign creation.

    Checks the campaign's rendering before personalisation, so it needs no settings: the placeholders and
    untracked links it looks at differ from the sent bytes by a few hundred bytes at most.
    """
    problems: list[str] = []
    model = digests.from_stored(digest)
    for mailing_list in lists:
        rendered = rendering.render_for_list(model, mailing_list, template_source=template_source)
        found = inspect(
            subject=subject,
            html_part=rendered.html,
            text_part=rendered.text,
            unsubscribe_url=rendering.UNSUBSCRIBE_URL,
            mailing_list=mailing_list,
            digest=digest,
        )
        prefix = f"list {mailing_list.slug!r}: " if len(lists) > 1 else ""
        problems += [prefix + str(finding).removeprefix("error: ") for finding in errors(found)]
    return problems


# --- the structural checks -------------------------------------------------------------------------------


class _Elements(HTMLParser):
    """Collects `<a href>` and `<img>` elements with their attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href is not None:
                self.links.append(href.strip())
        elif tag == "img":
            self.images.append(dict(attrs))


def inspect(
    *,
    subject: str,
    html_part: str,
    text_part: str,
    unsubscribe_url: str,
    mailing_list: MailingList,
    digest: Digest,
    links: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Size, subject, links, images, unsubscribe link and postal address of one rendered email."""
    findings: list[Finding] = []
    items: dict[str, tuple[int, str]] = {}  # URL -> (item number, headline): which item a finding concerns
    for number, item in enumerate(digest.items, start=1):
        for url in (item.url, item.image):
            if url:
                items.setdefault(url, (number, item.headline))

    def about(url: str | None) -> dict[str, Any]:
        number, headline = items.get((links or {}).get(url or "", url or ""), (None, None))
        return {"item": number, "headline": headline}

    findings += _size_and_subject(html_part, subject)
    for number, item in enumerate(digest.items, start=1):
        if item.image and not (item.image_alt or "").strip():
            findings.append(
                Finding(
                    "info",
                    "the image has no description of its own, so readers who cannot see it hear the headline: "
                    "describe what it shows",
                    item=number,
                    headline=item.headline,
                )
            )
    elements = _Elements()
    elements.feed(html_part)
    for href in dict.fromkeys(elements.links):
        if href in rendering.PLACEHOLDERS:
            continue  # checked before personalisation (the send-time gate): becomes a URL per recipient
        if urlsplit(href).scheme.lower() not in _LINK_SCHEMES or not (href.startswith("mailto:") or "//" in href):
            findings.append(
                Finding("error", f"link {href[:100]!r} is not an absolute http(s) or mailto URL", **about(href))
            )
    for image in elements.images:
        src = (image.get("src") or "").strip()
        hidden = image.get("aria-hidden") == "true" or (image.get("width"), image.get("height")) == ("1", "1")
        if not hidden and not (image.get("alt") or "").strip():
            findings.append(Finding("error", f"image {src[:100]!r} has no alt text", **about(src)))
        if urlsplit(src).scheme.lower() not in ("http", "https"):
            findings.append(
                Finding("error", f"image source {src[:100]!r} is not an absolute http(s) URL", **about(src))
            )

    if unsubscribe_url not in elements.links:
        findings.append(Finding("error", "the HTML part has no unsubscribe link"))
    if unsubscribe_url not in text_part:
        findings.append(Finding("error", "the text part has no unsubscribe link"))

    findings += _postal_address(mailing_list, html_part, text_part)
    return findings


def _size_and_subject(html_part: str, subject: str) -> list[Finding]:
    findings: list[Finding] = []
    size = len(html_part.encode("utf-8"))
    shown = f"{size / 1024:.1f} KB"
    if size > HTML_ERROR_BYTES:
        findings.append(Finding("error", f"the HTML is {shown}; Gmail clips above ~102 KB: shorten the digest"))
    elif size > HTML_WARNING_BYTES:
        findings.append(Finding("warning", f"the HTML is {shown}, close to Gmail's ~102 KB clipping limit"))
    else:
        findings.append(Finding("info", f"the HTML is {shown} (Gmail clips above ~102 KB)"))

    subject = subject.strip()
    if not subject:
        findings.append(Finding("error", "the subject is empty"))
    elif len(subject) > SUBJECT_MAX:
        findings.append(
            Finding("warning", f"the subject is {len(subject)} characters; many clients cut it after ~{SUBJECT_MAX}")
        )
    return findings


def _postal_address(mailing_list: MailingList, html_part: str, text_part: str) -> list[Finding]:
    findings: list[Finding] = []
    address = rendering.theme_for(mailing_list).postal_address.strip()
    if not address:
        findings.append(
            Finding(
                "error",
                f"list {mailing_list.slug!r} has no postal address; the law in most places (CAN-SPAM, CASL) wants "
                "one in every newsletter: set the list's postal address",
            )
        )
    else:
        # The footer joins the address lines with ", "; look for the first line in both parts.
        first_line = address.splitlines()[0].strip()
        visible = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", html_part)).split())
        if first_line not in visible:
            findings.append(Finding("error", "the HTML part does not show the list's postal address"))
        if first_line not in " ".join(text_part.split()):
            findings.append(Finding("error", "the text part does not show the list's postal address"))
    return findings


# --- SpamAssassin -----------------------------------------------------------------------------------------

_STATUS = re.compile(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", re.MULTILINE)
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z][A-Z0-9_]+)\s+(.*)$", re.MULTILINE)


class SpamCheckFailed(Unavailable):
    """SpamAssassin did not give a score (timed out, or failed); the message says why."""


@dataclass(frozen=True)
class SpamScore:
    score: float
    rules: tuple[str, ...]  # the rules that moved the score, e.g. "HTML_IMAGE_RATIO_02 +0.8"


def spam_score(message: bytes, *, timeout: float = SPAMASSASSIN_TIMEOUT) -> SpamScore:
    """Score the complete message with a local SpamAssassin (no network tests, no Bayes)."""
    try:
        completed = subprocess.run(
            # Bayes off: its verdict would depend on what this machine learned before, and autolearn would
            # write to the home directory of whoever runs the check.
            ["spamassassin", "-L", "-t", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0"],
            input=message,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SpamCheckFailed(f"spamassassin did not answer within {timeout:.0f} s") from None
    report = completed.stdout.decode("utf-8", "replace")
    status = _STATUS.search(report)
    if status is None:
        reason = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SpamCheckFailed(f"spamassassin gave no score: {reason[-1] if reason else 'no output'}")
    table = report.split("Content analysis details:", 1)[-1].split("\n\n", 2)
    fired = tuple(
        f"{rule} {float(points):+.1f}"
        for points, rule, _ in _RULE.findall(table[1] if len(table) > 1 else "")
        if float(points) != 0  # informational rules (NO_RELAYS and the like) only add noise
    )
    return SpamScore(float(status.group(1)), fired)


def spamassassin_findings(message: bytes, *, timeout: float = SPAMASSASSIN_TIMEOUT) -> list[Finding]:
    """The spam score as a finding; [] never: an uninstalled or failing SpamAssassin is reported too."""
    if shutil.which("spamassassin") is None:
        return [Finding("info", "spamassassin is not installed: spam score not checked (apt install spamassassin)")]
    try:
        result = spam_score(message, timeout=timeout)
    except SpamCheckFailed as failure:
        return [Finding("warning", f"{failure}: spam score not checked")]
    rules = f" (rules: {', '.join(result.rules)})" if result.rules else ""
    score = result.score
    level: Level = "error" if score >= SPAM_ERROR else "warning" if score >= SPAM_WARNING else "info"
    return [Finding(level, f"SpamAssassin score {score:.1f}{rules}")]


def _sorted(findings: list[Finding]) -> list[Finding]:
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda finding: order[finding.level])
