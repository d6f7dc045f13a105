#!/usr/bin/env bash
# Runs every SQL block of README.md's "Querying" section on current ClickHouse engines through
# chDB (scripts/check_readme_queries.py says what is checked); tests/querying.rs runs the
# `-- query:` blocks on ClickHouse 18.16.
#
# Uses the venvs scripts/check-current-engine.sh keeps under .cache/chdb/, making any that is
# missing with it: HOOKHOUSE_CHDB_VERSIONS="4.4.0" (26.9; the default here) or
# "4.4.0 3.7.2 2.1.1" (26.9, 25.8, 24.8). Needs the payloads in ../shared/payloads/github.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a versions <<<"${HOOKHOUSE_CHDB_VERSIONS:-4.4.0}"
readonly cache=.cache/chdb payloads=../shared/payloads/github

[[ -d $payloads ]] || { echo "error: no payloads in $payloads" >&2; exit 1; }
for version in "${versions[@]}"; do
    if ! "$cache/$version/bin/python" -c 'import chdb' 2>/dev/null; then
        # Makes the venv (and checks hookhouse's statements on it on the way).
        HOOKHOUSE_CHDB_VERSIONS=$version scripts/check-current-engine.sh
    fi
    printf '==> README queries on chdb %s\n' "$version"
    "$cache/$version/bin/python" scripts/check_readme_queries.py README.md "$payloads"
done
