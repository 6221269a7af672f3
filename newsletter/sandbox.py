"""Render editor-supplied Jinja2 templates in a sandboxed child process limited in CPU time, memory and output.

Jinja2's `ImmutableSandboxedEnvironment` stops a template from reaching Python internals (`__class__`,
`__globals__`, mutating methods), but not from looping for ever or allocating gigabytes: a thread cannot be
killed and a C-level operation (`10 ** 10 ** 10`, `'x' * 10 ** 10`) never returns to Python to check a
deadline. So the render runs in a short-lived child process with kernel limits (RLIMIT_CPU, RLIMIT_AS) and
a streamed output cap, and the parent kills it after a wall-clock deadline as a last resort. A child costs
~50 ms, paid once per campaign and once per upload, never per recipient.

This module imports only the standard library and Jinja2 at the top, so the child starts fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from newsletter import i18n
from newsletter.errors import Invalid

__all__ = ["CPU_SECONDS", "MAX_OUTPUT_CHARS", "MEMORY_BYTES", "TemplateRejected", "check_syntax", "render"]

CPU_SECONDS = 2
MAX_OUTPUT_CHARS = 256 * 1024
MEMORY_BYTES = 1024 * 1024 * 1024
WALL_SECONDS = 20  # only reached if the child blocks without using CPU, which the sandbox leaves no way to do
TEMPLATE_FILENAME = "<template>"
HTML_SUFFIX = "_html"  # context values under such keys are trusted HTML (already escaped by the renderer)


class TemplateRejected(Invalid):
    """A template that cannot be compiled or rendered; `line` is its line number when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.reason = reason
        self.line = line


def check_syntax(source: str) -> None:
    """Parse the template in this process, reporting syntax errors with their line.

    Only parsing: compiling runs Jinja's optimizer, which folds constant expressions such as
    `'x' * 10 ** 10` or `'x'|center(10 ** 9)` right there, so it belongs in the limited child.
    """
    try:
        _environment(i18n.DEFAULT).parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"syntax error: {exc.message}", exc.lineno) from None


def render(
    source: str,
    context: Mapping[str, Any],
    *,
    cpu_seconds: int = CPU_SECONDS,
    max_output: int = MAX_OUTPUT_CHARS,
    memory_bytes: int = MEMORY_BYTES,
) -> str:
    """Render `source` with a JSON-compatible `context` in a limited child process, or raise TemplateRejected.

    Values of keys ending in `_html` are passed as Markup (they are HTML the renderer built and escaped).
    """
    check_syntax(source)
    request = json.dumps(
        {"source": source, "context": context, "cpu": cpu_seconds, "max_output": max_output, "memory": memory_bytes}
    ).encode("utf-8")
    try:
        # -I: no PYTHON* variables, no user site, no current directory on sys.path.
        completed = subprocess.run(
            [sys.executable, "-I", "-m", "newsletter.sandbox"],
            input=request,
            capture_output=True,
            timeout=WALL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TemplateRejected(f"rendering took longer than {WALL_SECONDS} s and was stopped") from None
    if completed.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise TemplateRejected(f"rendering used more than {cpu_seconds} s of CPU and was stopped (an endless loop?)")
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TemplateRejected(f"the template renderer failed: {detail[-1] if detail else completed.returncode}")
    result = json.loads(completed.stdout)
    if "error" in result:
        raise TemplateRejected(result["error"], result.get("line"))
    return str(result["output"])


# --- the child ---------------------------------------------------------------------------------------


class _Environment(ImmutableSandboxedEnvironment):
    # Intercepted operators are never constant-folded at compile time, only evaluated while rendering.
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})


def _environment(language: str) -> ImmutableSandboxedEnvironment:
    # Autoescape on: custom templates are MJML/HTML. StrictUndefined: a misspelt variable fails the upload.
    environment = _Environment(
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    # `_()` and `ngettext()` as in the bundled template, in the digest's language (the context's `lang`).
    environment.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    return environment


def _trusted(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _trusted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    if isinstance(value, str) and key.endswith(HTML_SUFFIX):
        return Markup(value)  # noqa: S704 - built and escaped by rendering.py, never editor input
    return value


def _template_line(traceback: TracebackType | None) -> int | None:
    """The template line of the innermost frame Jinja attributed to the template."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == TEMPLATE_FILENAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _render_limited(source: str, context: Mapping[str, Any], max_output: int) -> str:
    chunks: list[str] = []
    size = 0
    try:
        template = _environment(str(context.get("lang") or i18n.DEFAULT)).from_string(source)
        # Streamed, so a template printing in a loop is stopped as soon as it passes the cap.
        for chunk in template.generate(_trusted(dict(context))):
            size += len(chunk)
            if size > max_output:
                raise TemplateRejected(f"output is larger than {max_output // 1024} KB and was stopped")
            chunks.append(chunk)
    except TemplateRejected:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"syntax error: {exc.message}", exc.lineno) from None
    except SecurityError as exc:
        raise TemplateRejected(f"not allowed in a template: {exc}", _template_line(exc.__traceback__)) from None
    except UndefinedError as exc:
        raise TemplateRejected(f"undefined: {exc.message}", _template_line(exc.__traceback__)) from None
    except MemoryError:
        raise TemplateRejected(f"rendering needed more than {MEMORY_BYTES // 2**20} MB of memory") from None
    except RecursionError:
        raise TemplateRejected("recursion too deep (a macro calling itself?)") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise TemplateRejected(f"{type(exc).__name__}: {exc}", _template_line(exc.__traceback__)) from None
    return "".join(chunks)


def _child() -> None:
    import resource

    request = json.loads(sys.stdin.buffer.read())
    cpu = int(request["cpu"])
    # The soft limit sends SIGXCPU (terminates), the hard one SIGKILL: both reported as "too slow".
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(request["memory"]), int(request["memory"])))
    try:
        result: dict[str, Any] = {
            "output": _render_limited(request["source"], request["context"], int(request["max_output"]))
        }
    except TemplateRejected as exc:
        result = {"error": exc.reason, "line": exc.line}
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing to clean up, and it is the slowest part of a short run


if __name__ == "__main__":
    _child()
