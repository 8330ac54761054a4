#!/usr/bin/env bash
# Start the whole pack on this machine and show it working: install, check services, `eco2 up --detach`, a demo scan.
source "$(dirname "$0")/lib.sh"
install_project
ensure_redis
ensure_rabbitmq
.venv/bin/eco2 up --detach
.venv/bin/eco2 demo
echo
echo "The pack keeps running: 'eco2 status' shows it, 'eco2 down' stops it (both in .venv/bin)."
