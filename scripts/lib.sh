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
