#!/usr/bin/env bash
# The image's install steps, one source of truth: the Containerfile's RUN lines call this script, and so does
# the image check (tests/deploy/test_image.py), with the same arguments, on a machine without a container engine.
#
#   install.sh wheel DIST [EXTRA...] build the eco2 wheel and export uv.lock (runtime dependencies, with the extras
#                                    named: `worker` for the Celery image; hashed)
#   install.sh venv DIST PREFIX      a fresh venv at PREFIX: the locked dependencies, then the wheel, compiled
#   install.sh functions SRC DEST    the function sources (functions/<name>/main.py), compiled, read-only
#
# `wheel` runs in the project checkout (pyproject.toml, uv.lock, shared/). Needs uv ($UV, else on PATH);
# PYTHON names the interpreter of the venv (default python3).
set -euo pipefail

UV=${UV:-uv}
PYTHON=${PYTHON:-python3}
# Bytecode compiled at install time: a read-only image cannot write __pycache__, and a pod must not pay for it.
export UV_COMPILE_BYTECODE=1 UV_NO_PROGRESS=1 UV_LINK_MODE=copy

# functions-framework requires these for its own gunicorn server and reloader; `eco2 serve` runs uvicorn on the
# framework's ASGI app and never imports them (the image check starts every function without them).
UNUSED=(gunicorn uvicorn-worker watchdog)

wheel() {
  local dist=$1
  shift
  local options=()
  for extra in "$@"; do options+=(--extra "$extra"); done
  for package in "${UNUSED[@]}"; do options+=(--no-emit-package "$package"); done
  mkdir -p "$dist"
  # --frozen: uv.lock as committed, never re-resolved. Only the extras named: the dev tools stay out of the image.
  "$UV" export --frozen --no-dev --no-emit-project --no-emit-workspace "${options[@]}" --format requirements-txt --quiet --output-file "$dist/requirements.txt"
  "$UV" build --wheel --out-dir "$dist" --quiet
}

venv() {
  local dist=$1 prefix=$2
  "$UV" venv --quiet --python "$PYTHON" "$prefix"
  # Exactly the locked versions, each checked against its hash; nothing resolved.
  "$UV" pip install --quiet --python "$prefix/bin/python" --require-hashes --no-deps -r "$dist/requirements.txt"
  "$UV" pip install --quiet --python "$prefix/bin/python" --no-deps "$dist"/eco2-*.whl
}

functions() {
  local src=$1 dest=$2
  mkdir -p "$dest"
  cp -R "$src/." "$dest/"
  find "$dest" -name __pycache__ -prune -exec rm -rf {} +
  "$PYTHON" -m compileall -q "$dest"
  chmod -R a+rX,go-w "$dest"
}

case "${1:-}" in
  wheel) shift; wheel "$@" ;;
  venv) shift; venv "$@" ;;
  functions) shift; functions "$@" ;;
  *) echo "usage: $0 wheel DIST [EXTRA...] | venv DIST PREFIX | functions SRC DEST" >&2; exit 2 ;;
esac
