"""Benchmark digest rendering per campaign and personalisation per recipient, against the stdlib EmailMessage route."""

from __future__ import annotations

import base64
import email.policy
import email.utils
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter import links, rendering
from newsletter.digests import load_digest
from newsletter.dkim import DkimSigner
from newsletter.messages import CampaignMessage, Recipient

SAMPLE = Path(__file__).resolve().parent.parent / "newsletter" / "samples" / "sample-digest.md"
BASE = "https://news.example.org"
THEME = rendering.Theme(publication_name="The Steppe Courier", postal_address="1 Example Avenue, Astana")


def timed(function: Callable[[int], object], *, budget: float = 1.5, minimum: int = 5) -> float:
    """Seconds per call: calls `function(i)` for about `budget` seconds (after one warm-up call)."""
    function(0)
    count, started = 0, time.perf_counter()
    while count < minimum or time.perf_counter() - started < budget:
        function(count)
        count += 1
    return (time.perf_counter() - started) / count


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def values(i: int) -> dict[str, str]:
    return {
        rendering.NAME: f"Reader {i}",
        rendering.UNSUBSCRIBE_URL: f"{BASE}{links.UNSUBSCRIBE}tok{i:012d}.abcdefghijklmnop",
        rendering.PREFERENCES_URL: f"{BASE}{links.PREFERENCES}tok{i:012d}.abcdefghijklmnop",
        rendering.TRACK: f"trk{i:012d}.abcdefghijklmnop",
    }


def composer(rendered: rendering.RenderedEmail, signer: DkimSigner | None) -> Callable[[int], bytes]:
    message = CampaignMessage(
        subject=rendered.subject,
        from_email="digest@example.org",
        from_name="The Steppe Courier",
        list_id="Kazakhstan in Foreign Media <weekly.example.org>",
        html=rendered.html,
        text=rendered.text,
        dkim=signer,
    )

    def one(i: int) -> bytes:
        v = values(i)
        return message.render(
            Recipient(
                email=f"reader{i}@example.com",
                name=f"Reader {i}",
                message_id=f"<1.{i}.bench@example.org>",
                values=v,
                unsubscribe_url=v[rendering.UNSUBSCRIBE_URL],
            )
        )

    return one


def stdlib(
    rendered: rendering.RenderedEmail, key: bytes | None, algorithm: bytes = b"rsa-sha256"
) -> Callable[[int], bytes]:
    def one(i: int) -> bytes:
        v = values(i)
        html, text = rendered.html, rendered.text
        for placeholder, value in v.items():
            html = html.replace(placeholder, value)
            text = text.replace(placeholder, value)
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = "The Steppe Courier <digest@example.org>"
        message["To"] = f"Reader {i} <reader{i}@example.com>"
        message["Subject"] = rendered.subject
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = f"<1.{i}.bench@example.org>"
        message["List-Id"] = "Kazakhstan in Foreign Media <weekly.example.org>"
        message["List-Unsubscribe"] = f"<{v[rendering.UNSUBSCRIBE_URL]}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text, cte="quoted-printable")
        message.add_alternative(html, subtype="html", cte="quoted-printable")
        data = message.as_bytes()
        if key is None:
            return data
        signature = dkim.sign(
            data,
            b"news",
            b"example.org",
            key,
            signature_algorithm=algorithm,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe"],
        )
        return bytes(signature) + data

    return one


def stdlib_ed25519(
    rendered: rendering.RenderedEmail, ed_key: ed25519.Ed25519PrivateKey
) -> Callable[[int], bytes] | None:
    try:  # dkimpy signs Ed25519 through PyNaCl, an optional dependency of it
        import nacl  # noqa: F401
    except ImportError:
        return None
    # dkimpy takes an Ed25519 key as the base64 of its 32-byte seed
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return stdlib(rendered, base64.b64encode(seed), b"ed25519-sha256")


def main() -> None:
    digest = load_digest(SAMPLE)

    def render(_: int) -> rendering.RenderedEmail:
        return rendering.render_digest(
            digest,
            theme=THEME,
            list_name="Kazakhstan in Foreign Media",
            link_href=lambda url: links.click_url(BASE, rendering.TRACK, 1),
            open_pixel_url=links.open_url(BASE, rendering.TRACK),
        )

    per_campaign = timed(render)
    rendered = render(0)
    html_kb = len(rendered.html.encode()) / 1024

    rsa_pem = pem(rsa.generate_private_key(65537, 2048))
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_pem = pem(ed_key)
    signers = {
        "none": None,
        "RSA-2048": DkimSigner("example.org", "news", rsa_pem),
        "Ed25519": DkimSigner("example.org", "news", ed_pem),
    }

    baselines: dict[str, Callable[[int], bytes] | None] = {
        "none": stdlib(rendered, None),
        "RSA-2048": stdlib(rendered, rsa_pem),
        "Ed25519": stdlib_ed25519(rendered, ed_key),
    }

    print(
        f"digest render per campaign (Jinja2 + MJML + text, sample, {html_kb:.1f} KB HTML): {per_campaign * 1e3:.2f} ms"
    )
    print()
    print(f"{'per message, DKIM':<22}{'composer':>12}{'stdlib+dkimpy':>16}{'ratio':>9}")
    for label, signer in signers.items():
        ours = timed(composer(rendered, signer))
        baseline = baselines[label]
        theirs = timed(baseline) if baseline is not None else None
        their_text = f"{theirs * 1e3:.3f} ms" if theirs else "n/a (PyNaCl)"
        ratio = f"{theirs / ours:.1f}x" if theirs else "-"
        print(f"{label:<22}{ours * 1e3:>9.3f} ms{their_text:>16}{ratio:>9}")
    print()
    print("composer: CampaignMessage.render (pre-encoded skeleton + substitution, DKIM via cryptography);")
    print("stdlib: str.replace of the placeholders + EmailMessage + as_bytes() (+ dkimpy's dkim.sign).")


if __name__ == "__main__":
    main()
