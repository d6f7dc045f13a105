#!/usr/bin/env bash
# Installs what the tests and scripts/run-local.sh need from Debian's archive: clickhouse-server,
# clickhouse-client (Debian 12 ships ClickHouse 18.16) and curl. Safe to run again: it does
# nothing when they are present.
#
# It never starts the system's clickhouse-server service: hookhouse's tests and run-local.sh start
# their own servers with their own config. The package's postinst would start the service through
# invoke-rc.d; while installing, a temporary /usr/sbin/policy-rc.d (the policy hook Debian's
# invoke-rc.d consults) denies that. Should the postinst fail anyway (containers without an init
# system), the script goes on as long as the binaries are installed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly SERVER=/usr/sbin/clickhouse-server
readonly POLICY=/usr/sbin/policy-rc.d

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

have_server() { [[ -x "$SERVER" ]] || command -v clickhouse-server >/dev/null 2>&1; }
have_client() { command -v clickhouse-client >/dev/null 2>&1; }
have_curl() { command -v curl >/dev/null 2>&1; }

packages=()
if have_server && have_client; then
    step "clickhouse-server and clickhouse-client are installed: nothing to do"
else
    packages+=(clickhouse-server clickhouse-client)
fi
if have_curl; then
    step "curl is installed: nothing to do"
else
    packages+=(curl)
fi
if ((${#packages[@]} == 0)); then
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "installing ${packages[*]} needs root: run this script as root or install sudo"
    sudo=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${packages[*]} with your system's package manager"

# Deny service starts during the install, unless the machine already has its own policy.
policy_added=false
remove_policy() {
    if [[ "$policy_added" == true ]]; then
        "${sudo[@]}" rm -f "$POLICY"
        step "removed the temporary $POLICY"
    fi
}
trap remove_policy EXIT
if [[ ! -e "$POLICY" ]]; then
    step "adding a temporary $POLICY so the package does not start the clickhouse-server service"
    printf '#!/bin/sh\n# added by hookhouse scripts/install-clickhouse.sh while installing; removed after\nexit 101\n' |
        "${sudo[@]}" tee "$POLICY" >/dev/null
    "${sudo[@]}" chmod 0755 "$POLICY"
    policy_added=true
fi

apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)

step "apt-get update"
"${apt[@]}" update -qq || die "apt-get update failed"

step "apt-get install -y ${packages[*]}"
install_status=0
"${apt[@]}" install -y "${packages[@]}" || install_status=$?

missing=()
have_server || missing+=(clickhouse-server)
have_client || missing+=(clickhouse-client)
have_curl || missing+=(curl)
if ((${#missing[@]} > 0)); then
    die "apt-get install exited with $install_status and ${missing[*]} is still missing"
fi
if ((install_status != 0)); then
    # The usual cause is the server package's postinst failing to start the service where there is
    # no init system; the binaries are in place, and that is all hookhouse uses.
    warn "apt-get install exited with $install_status, but the binaries are installed; carrying on"
    warn "dpkg state: $(dpkg-query -W -f='${Package} ${db:Status-Abbrev}  ' clickhouse-server clickhouse-client curl 2>/dev/null || true)"
fi

step "ready: $SERVER, $(clickhouse-client --version 2>/dev/null), $(curl --version 2>/dev/null | sed -n 1p | cut -d' ' -f1-2)"
