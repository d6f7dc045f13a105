#!/usr/bin/env bash
# Installs the test receiver's Python side (tests/receiver/receiver.py): a venv at .cache/receiver
# with the reference Standard Webhooks library from PyPI, which verifies every notification the
# tests get from hookhouse (CONTRACT §9) independently of our own signing code.
#
# Created once, then reused while it holds exactly the pinned version; quick when it does. Safe to
# run again, and from several processes at once (test binaries call it; a lock serialises them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

readonly version=1.1.0
readonly venv=.cache/receiver

# True when $venv has exactly standardwebhooks $version, importable.
installed() {
    "$venv/bin/python" -c "
import sys, importlib.metadata, standardwebhooks
sys.exit(importlib.metadata.version('standardwebhooks') != '$version')" 2>/dev/null
}

installed && exit 0

command -v python3 >/dev/null 2>&1 || die "python3 is not installed; the test receiver needs Python 3.9 or newer"

mkdir -p .cache
if command -v flock >/dev/null 2>&1; then
    exec 9>.cache/receiver.lock
    flock 9
    installed && exit 0 # another process installed it while we waited
fi

# Debian's python3 lacks venv until python3-venv is installed.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        die "python3 has no venv module; install python3-venv"
    fi
fi

step "installing standardwebhooks==$version into $venv"
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "standardwebhooks==$version" ||
    die "could not install standardwebhooks==$version from PyPI"
installed || die "$venv does not import standardwebhooks $version after installing it"
