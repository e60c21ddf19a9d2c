#!/usr/bin/env bash
# Install the servers that the tests start themselves: redis-server (the Feast online store) and
# PostgreSQL (a SQL source); docker-compose (v1), whose `config` renders docker-compose.yml
# without a Docker engine (tests/test_compose.py); and chromium for the browser test of the UI.
# Idempotent and quiet: does nothing when all are present, otherwise
# one `apt-get update` and one `apt-get install`. `make env` calls it, so `make test` on a fresh
# clone has them.
#
# Nothing is started or enabled: the test fixtures start each server on a free loopback port under
# a temporary directory and stop it. To keep it so, the install is told not to create PostgreSQL's
# default cluster, and (only when the machine has no policy of its own) not to start services.
#
# Without root or sudo, or without apt-get, it says what is missing and exits 0: the tests that
# need a missing server are then skipped, each saying why.
set -euo pipefail

log() { echo "[install_services] $*"; }

have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
have_postgres || need+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser test (Playwright, executable_path)
[ "${#need[@]}" -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    log "missing ${need[*]}: install them as root (apt-get install -y ${need[*]}); tests that need them are skipped"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "missing ${need[*]} and no apt-get here: install them with your package manager; tests that need them are skipped"
  exit 0
fi

# no default PostgreSQL cluster on port 5432: the tests make their own
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" \
  | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/mlplatform.conf >/dev/null

# no service start during the install (containers have no init system; the tests start servers)
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

log "installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
out="$(mktemp)"
if ! { "${SUDO[@]}" apt-get update -qq && \
       "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$out" 2>&1; then
  cat "$out" >&2; rm -f "$out"
  log "apt-get failed (output above)"; exit 1
fi
rm -f "$out"
log "installed: $(command -v redis-server || echo 'redis-server ?'), $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1 || echo 'initdb ?')"
