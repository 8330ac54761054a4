#!/usr/bin/env bash
# Start the whole pack on this machine and show it working: install, check services, `eco2 up --detach`,
# then one scan through the mobile API (gateway → broker → vision → rules → answer → reward, live over SSE).
source "$(dirname "$0")/lib.sh"
install_project --extra local
ensure_redis
ensure_rabbitmq
export ECO2_ENV="${ECO2_ENV:-development}"   # development: the built-in JWT secret, the stand-in's samples allowlisted
.venv/bin/eco2 up --detach
if [ -z "${OPENAI_API_KEY:-}" ]; then
  .venv/bin/eco2 scan http://127.0.0.1:8090/samples/clear_pet_bottle.png --text "다 마신 생수병이에요"
else
  echo "OPENAI_API_KEY is set: no stand-in samples to scan; try: .venv/bin/eco2 scan <an image URL>"
fi
echo
echo "The pack keeps running: '.venv/bin/eco2 status' shows it, '.venv/bin/eco2 down' stops it."
