# The app image: the API, the worker and the migrations (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, pinned by constraints.txt, so a code change does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

COPY . .
RUN pip install -c constraints.txt . \
    && rm -rf build *.egg-info \
    && useradd --system --no-create-home --uid 10001 nurture

USER nurture
EXPOSE 8000
CMD ["uvicorn", "--factory", "api.app:main", "--host", "0.0.0.0", "--port", "8000"]
