# Shared by scripts/up.sh and scripts/test.sh: install the project, make sure Redis and RabbitMQ answer.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_project() {
  # uv installs exactly what uv.lock pins; fetch it with pip when the machine has none.
  if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check uv || { echo "could not install uv: run 'python3 -m pip install uv'"; exit 1; }
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
  fi
  UV=$(command -v uv || echo "python3 -m uv")
  $UV sync --quiet --locked --compile-bytecode "$@"
}

ensure_redis() {
  port_open 6379 && return 0
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis on 127.0.0.1:6379"
    mkdir -p /tmp/eco2-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/eco2-redis >/dev/null
    for _ in $(seq 50); do port_open 6379 && return 0; sleep 0.1; done
  fi
  echo "Redis is not running on 127.0.0.1:6379. Install and start it:"
  echo "  apt-get install -y redis-server && redis-server --daemonize yes --bind 127.0.0.1 --port 6379"
  exit 1
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ on 127.0.0.1:5672 (takes a few seconds)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 120); do port_open 5672 && return 0; sleep 0.5; done
  fi
  echo "RabbitMQ is not running on 127.0.0.1:5672. Install and start it:"
  echo "  apt-get install -y rabbitmq-server && rabbitmq-server -detached"
  exit 1
}

ensure_postgres() {
  # The persistence tests (tests/persist) use the real PostgreSQL, trust auth; they create their own database.
  port_open 5432 && return 0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL on 127.0.0.1:5432"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 60); do port_open 5432 && return 0; sleep 0.5; done
  fi
  echo "PostgreSQL is not running on 127.0.0.1:5432 (trust auth). Install and start it:"
  echo "  apt-get install -y postgresql && pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
  exit 1
}

ensure_chromium() {
  # The web page's browser test (tests/web/test_browser.py) drives Debian's chromium; Korean text needs a font.
  if command -v chromium >/dev/null 2>&1 && [ -n "$(fc-list :lang=ko 2>/dev/null)" ]; then return 0; fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and a Korean font for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-nanum >/dev/null \
      || echo "could not install chromium: the browser test fails under CI=true and is skipped otherwise"
  else
    echo "no apt-get: install chromium yourself (the browser test fails under CI=true, is skipped otherwise)"
  fi
}
