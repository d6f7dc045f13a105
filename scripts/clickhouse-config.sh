#!/usr/bin/env bash
# Writes config.xml and users.xml for a private ClickHouse (18.16 and later) into DIR: data, logs
# (DIR/log) and temporary files under DIR, listening on 127.0.0.1 only, user `default` without
# password. Used by scripts/run-local.sh and bench/run.sh; tests/common/mod.rs writes the same
# in Rust for the test suite.
#
#   scripts/clickhouse-config.sh DIR HTTP_PORT TCP_PORT
set -euo pipefail

dir=$1 http_port=$2 tcp_port=$3
xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$1"; }
d=$(xml_escape "$dir")
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
cat >"$dir/config.xml" <<EOF
<!-- Written by scripts/clickhouse-config.sh; edits are lost on the next start. -->
<yandex>
  <logger><level>warning</level><log>$d/log/server.log</log><errorlog>$d/log/error.log</errorlog><console>0</console></logger>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
cat >"$dir/users.xml" <<'EOF'
<!-- Written by scripts/clickhouse-config.sh; edits are lost on the next start. -->
<yandex>
  <profiles><default><log_queries>0</log_queries></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
