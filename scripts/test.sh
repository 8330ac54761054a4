#!/usr/bin/env bash
# Install everything and run the checks CI runs: lint, format, types, the test suite (real Redis and RabbitMQ).
source "$(dirname "$0")/lib.sh"
install_project --extra dev --extra local
ensure_redis
ensure_rabbitmq
ensure_postgres
ensure_chromium
.venv/bin/ruff check shared functions tests
.venv/bin/ruff format --check shared functions tests
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest -m "not slow" "$@"
