"""A publication's accent colour made readable: WCAG 2.x contrast, and the nearest shade that passes.

Emails and pages use the accent for links, the brand name and buttons, on a white card in light mode and
on a near-black card in dark mode. An editor's colour is kept where it reads well and moved towards black
(light mode) or white (dark mode) only as far as it takes to reach `MIN_CONTRAST` (WCAG AA, normal text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DARK_CARD", "LIGHT_CARD", "MIN_CONTRAST", "Palette", "contrast", "palette", "readable_on"]

LIGHT_CARD = "#ffffff"
DARK_CARD = "#161b22"  # the dark-mode card of the emails and the pages
MIN_CONTRAST = 4.5


def _rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    if len(value) == 3:
        value = "".join(ch * 2 for ch in value)
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(min(max(channel, 0), 255)):02x}" for channel in rgb)


def _luminance(color: str) -> float:
    """Relative luminance, WCAG 2.x definition (sRGB channels linearised)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(channel) for channel in _rgb(color))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two colours, 1 to 21."""
    lighter, darker = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def readable_on(color: str, background: str, minimum: float = MIN_CONTRAST) -> str:
    """`color`, or the first shade of it towards black or white (whichever contrasts with `background`)
    that reaches `minimum` against `background`."""
    if contrast(color, background) >= minimum:
        return _hex(_rgb(color))
    target = (0.0, 0.0, 0.0) if _luminance(background) > 0.18 else (255.0, 255.0, 255.0)
    start = _rgb(color)
    for step in range(1, 101):
        mix = step / 100
        shade = _hex([s + (t - s) * mix for s, t in zip(start, target, strict=True)])
        if contrast(shade, background) >= minimum:
            return shade
    return _hex(target)


@dataclass(frozen=True)
class Palette:
    """The accent as used: links, brand and buttons on the light card, links on the dark card, button text."""

    light: str
    dark: str
    button_text: str


def palette(accent: str) -> Palette:
    light = readable_on(accent, LIGHT_CARD)
    # A button is the accent itself with white or near-black text, whichever reads better on it.
    button_text = LIGHT_CARD if contrast(light, LIGHT_CARD) >= contrast(light, "#0d1117") else "#0d1117"
    return Palette(light=light, dark=readable_on(accent, DARK_CARD), button_text=button_text)
