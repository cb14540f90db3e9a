#!/bin/bash
# Entrypoint of the mariadb image built by trove-image-builder from Debian
# packages. It does what Trove's guest agent expects of the official image
# (the contract: trove_image_builder/build/datastore_image/__init__.py):
#
# - runs as whatever uid:gid the container is given (the agent passes
#   database_service_uid:gid, 1001:1001 by default); it never switches user
#   nor changes ownership, and writes only to the data folder, the socket
#   folder and temporary folders;
# - a command starting with an option runs the server with it (the agent
#   passes "--defaults-file=/etc/mysql/my.cnf --ignore-db-dir=... --datadir=...");
# - an empty data folder is initialised: root@localhost and root@'%' with
#   MYSQL_ROOT_PASSWORD, a 'healthcheck' user and DATADIR/.my-healthcheck.cnf
#   for healthcheck.sh;
# - with MARIADB_AUTO_UPGRADE an existing data folder gets a missing
#   .my-healthcheck.cnf back (the agent relies on this after a restore) and
#   mariadb-upgrade when its data comes from an older server;
# - any other command is run as given.
# Everything this script says goes to stderr, like the server's own log.
set -eu
set -o pipefail

note() {
    printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" "$*" >&2
}

die() {
    note "error: $*"
    exit 1
}

# A command that starts with an option: run the server with it.
if [ "${1:0:1}" = '-' ]; then
    set -- mariadbd "$@"
fi
case "$1" in
    mariadbd | mysqld) ;;
    *) exec "$@" ;;
esac
for arg in "$@"; do
    case "$arg" in
        --help | -'?' | --version | -V | --print-defaults) exec "$@" ;;
    esac
done

# The settings as the server sees them: its options, then its option files
# (the agent's /etc/mysql/my.cnf names the socket and the data folder). This
# also stops early, with the server's own message, on an option it refuses.
#
# --ignore-db-dir (in the agent's command, mariadb/manager.py): MariaDB 11.8
# has no option of that name, but takes it as the unique prefix of
# --ignore-db-dirs, which accumulates: "--ignore-db-dir=lost+found
# --ignore-db-dir=conf.d" gives ignore_db_dirs=lost+found,conf.d (checked;
# the server logs a note about the prefix). So it is passed on unchanged.
if ! settings=$("$@" --verbose --help 2>/dev/null); then
    die "the server refuses its options ($*): $("$@" --verbose --help 2>&1 >/dev/null)"
fi
setting() {
    awk -v name="$1" '$1 == name && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }' \
        <<<"$settings"
}
DATADIR=$(setting datadir)
DATADIR=${DATADIR%/}
SOCKET=$(setting socket)
PORT=$(setting port)
if [ -z "$DATADIR" ] || [ -z "$SOCKET" ]; then
    die "no data folder or socket in the server's settings"
fi

ROOT_PASSWORD=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
ROOT_HOST=${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}
SKIP_TZINFO=${MARIADB_INITDB_SKIP_TZINFO:-${MYSQL_INITDB_SKIP_TZINFO:-}}
AUTO_UPGRADE=${MARIADB_AUTO_UPGRADE:-}
# Under TCG emulation in a small VM a first start can take minutes.
START_TIMEOUT=${MARIADB_START_TIMEOUT:-600}

# A string made safe inside a SQL '...' literal.
sql_string() {
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\\\'}"
}

# SQL on stdin, as root over the socket of the temporary server (no option
# files: they may name another user); no password (none is set yet, or the
# grant tables are skipped).
sql() {
    MYSQL_PWD='' mariadb --no-defaults --protocol=socket --socket="$SOCKET" \
        --user=root --batch --skip-column-names "$@"
}

TEMP_PID=
temp_server_start() {
    note "starting a temporary server, socket only"
    "$@" --skip-networking --socket="$SOCKET" --wsrep-on=OFF --skip-log-bin \
        --expire-logs-days=0 --loose-innodb-buffer-pool-load-at-startup=0 &
    TEMP_PID=$!
    local deadline=$((SECONDS + START_TIMEOUT))
    until sql <<<'SELECT 1' >/dev/null 2>&1; do
        if ! kill -0 "$TEMP_PID" 2>/dev/null; then
            wait "$TEMP_PID" || true
            TEMP_PID=
            die "the temporary server exited (its log is above)"
        fi
        [ "$SECONDS" -lt "$deadline" ] ||
            die "the temporary server did not answer within $START_TIMEOUT s"
        sleep 1
    done
}

temp_server_stop() {
    kill -TERM "$TEMP_PID"
    wait "$TEMP_PID" || die "the temporary server did not stop cleanly"
    TEMP_PID=
    note "temporary server stopped"
}

# Leave no temporary server behind, also when stopped during setup (as
# PID 1 this shell ignores SIGTERM unless it traps it).
on_exit() {
    if [ -n "$TEMP_PID" ]; then
        kill -TERM "$TEMP_PID" 2>/dev/null || true
        wait "$TEMP_PID" 2>/dev/null || true
    fi
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The health check's users (USAGE only, at the three local host names) and
# the option file healthcheck.sh reads: the agent's HEALTHCHECK names
# DATADIR/.my-healthcheck.cnf (mariadb/service.py).
HEALTHCHECK_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
healthcheck_sql() {
    local host
    for host in localhost 127.0.0.1 ::1; do
        echo "CREATE USER IF NOT EXISTS healthcheck@'$host' IDENTIFIED BY '$HEALTHCHECK_PASSWORD';"
        echo "SET PASSWORD FOR healthcheck@'$host' = PASSWORD('$HEALTHCHECK_PASSWORD');"
        echo "GRANT USAGE ON *.* TO healthcheck@'$host';"
    done
}
write_healthcheck_cnf() {
    (
        umask 077
        printf '[mariadb-client]\nuser=healthcheck\npassword=%s\nsocket=%s\nport=%s\n' \
            "$HEALTHCHECK_PASSWORD" "$SOCKET" "${PORT:-3306}" >"$DATADIR/.my-healthcheck.cnf.tmp"
    )
    mv "$DATADIR/.my-healthcheck.cnf.tmp" "$DATADIR/.my-healthcheck.cnf"
}

initialise() {
    [ -n "$ROOT_PASSWORD" ] ||
        die "the data folder $DATADIR is empty and MYSQL_ROOT_PASSWORD is not set"
    note "initialising the empty data folder $DATADIR"
    mkdir -p "$DATADIR"
    # normal: root@localhost logs in with a password (the agent connects
    # as root with MYSQL_ROOT_PASSWORD over the socket), not by unix_socket;
    # --rpm: no DNS check of the host name, no hints for humans.
    mariadb-install-db "${@:2}" --datadir="$DATADIR" --rpm \
        --auth-root-authentication-method=normal --skip-test-db \
        --default-time-zone=SYSTEM --skip-log-bin --expire-logs-days=0 \
        --loose-innodb-buffer-pool-load-at-startup=0 \
        --loose-innodb-buffer-pool-dump-at-shutdown=0 >&2
    temp_server_start "$@"
    if [ -z "$SKIP_TZINFO" ]; then
        note "loading the time zone tables"
        mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo | sql mysql
    fi
    local password remote_root=''
    password=$(sql_string "$ROOT_PASSWORD")
    # root@'%' too, as the official image does when MYSQL_ROOT_HOST is
    # unset: the agent keeps it only when a restored backup had remote root
    # enabled (mysql_common/manager.py, do_prepare); otherwise its
    # secure_root() deletes every root but root@localhost
    # (sql_query.REMOVE_ROOT).
    if [ "$ROOT_HOST" != localhost ]; then
        local host
        host=$(sql_string "$ROOT_HOST")
        remote_root="CREATE USER root@'$host' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO root@'$host' WITH GRANT OPTION;
GRANT PROXY ON ''@'%' TO root@'$host' WITH GRANT OPTION;"
    fi
    note "setting root's password, creating the health check's users"
    sql mysql --binary-mode <<EOSQL
SET @@SESSION.SQL_LOG_BIN = 0;
SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
SET PASSWORD FOR root@localhost = PASSWORD('$password');
$remote_root
$(healthcheck_sql)
EOSQL
    write_healthcheck_cnf
    temp_server_stop
    note "data folder initialised"
}

# major.minor of the first version in the text on stdin
major_minor() {
    sed -n 's/^[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}

# True when the data was last upgraded by an older server than this one
# (or was never: no mariadb_upgrade_info).
upgrade_needed() {
    local info="$DATADIR/mariadb_upgrade_info" data server
    [ -f "$info" ] || return 0
    data=$(major_minor <"$info")
    server=$(mariadbd --version | sed 's/.* Ver //' | major_minor)
    [ -n "$data" ] || return 0
    [ "$data" != "$server" ] &&
        [ "$(printf '%s\n%s\n' "$data" "$server" | sort -V | head -n 1)" = "$data" ]
}

# An existing data folder with MARIADB_AUTO_UPGRADE set (the agent sets it,
# mariadb/service.py): mariadb-upgrade when the data comes from an older
# server, and the health check's users and option file when the file is
# missing (after a restore from a backup).
auto_upgrade() {
    # Both without the grant tables: root's password is not known here (a
    # restored backup keeps its own until the agent resets it). Each on a
    # temporary server of its own, since either ends with FLUSH PRIVILEGES,
    # after which a new connection needs that password.
    local options=(--skip-grant-tables --skip-slave-start
        --loose-innodb-buffer-pool-dump-at-shutdown=0)
    if upgrade_needed; then
        temp_server_start "$@" "${options[@]}"
        note "upgrading the data folder (mariadb-upgrade)"
        mariadb-upgrade --no-defaults --protocol=socket --socket="$SOCKET" \
            --user=root --upgrade-system-tables >&2
        temp_server_stop
    fi
    if [ ! -f "$DATADIR/.my-healthcheck.cnf" ]; then
        temp_server_start "$@" "${options[@]}"
        note "creating the health check's users again"
        sql --binary-mode <<EOSQL
SET @@SESSION.SQL_LOG_BIN = 0;
SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
FLUSH PRIVILEGES;
$(healthcheck_sql)
EOSQL
        write_healthcheck_cnf
        temp_server_stop
    fi
}

if [ ! -d "$DATADIR/mysql" ]; then
    initialise "$@"
elif [ -n "$AUTO_UPGRADE" ] && [ "$AUTO_UPGRADE" != 0 ]; then
    auto_upgrade "$@"
fi

trap - EXIT TERM INT
note "starting the server: $*"
exec "$@"
