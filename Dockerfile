# One image for every role: migrate, web, worker and beat differ only by their command.
# Build stage: the virtualenv with the package and its dependencies (pip, wheels and caches stay here).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY newsletter ./newsletter
COPY worker ./worker
COPY templates ./templates
# editable: the package finds templates/ beside it in /app, which the final stage copies as is
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -e .

# Final stage: the runtime only, as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN useradd --system --uid 10001 --home-dir /app newsletter
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
WORKDIR /app
USER newsletter
EXPOSE 8000
# the web role's check; compose gives the worker its own (celery inspect ping)
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["newsletter", "serve", "--host", "0.0.0.0", "--port", "8000"]
