# One image for every role: migrate, web, worker and beat differ only by their command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY newsletter ./newsletter
COPY worker ./worker
COPY templates ./templates
RUN pip install -e . && useradd --system --uid 10001 newsletter
USER newsletter
EXPOSE 8000
CMD ["newsletter", "serve", "--host", "0.0.0.0", "--port", "8000"]
