#!/bin/bash
# Entrypoint of the mysql image built by trove-image-builder from Ubuntu
# noble packages. It does what Trove's guest agent expects of the official
# image (the contract: trove_image_builder/build/datastore_image/__init__.py):
#
# - runs as whatever uid:gid the container is given (the agent passes
#   database_service_uid:gid, 1001:1001 by default:
#   trove/guestagent/datastore/mysql_common/service.py start_db); it never
#   switches user nor changes ownership, and writes only to the data
#   folder, the socket folder and temporary folders;
# - a command starting with an option runs the server with it (the agent
#   passes "--datadir=/var/lib/mysql/data", mysql_common/manager.py
#   get_start_db_params; mysqld then reads the agent's /etc/mysql/my.cnf);
#   "mysqld ..." runs the server too (the agent's restore passes
#   "mysqld --init-file=... --datadir=...", mysql_common/manager.py
#   reset_password_for_restore, and "mysqld --skip-slave-start=ON ...",
#   mysql/service.py reset_data_for_restore_snapshot);
# - an empty data folder is initialised (mysqld --initialize-insecure):
#   root@localhost and root@'%' with MYSQL_ROOT_PASSWORD, the time zone
#   tables unless MYSQL_INITDB_SKIP_TZINFO (the agent sets it), all on a
#   temporary server without networking, so the agent's health check
#   ('mysqladmin ping -h 127.0.0.1', mysql/service.py HEALTHCHECK) passes
#   only once the real server listens;
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
    set -- mysqld "$@"
fi
if [ "$1" != mysqld ]; then
    exec "$@"
fi
for arg in "$@"; do
    case "$arg" in
        --help | -'?' | --version | -V | --print-defaults) exec "$@" ;;
    esac
done

# The settings as the server sees them: its options, then its option files
# (the agent's /etc/mysql/my.cnf names the socket and the data folder). This
# also stops early, with the server's own message, on an option it refuses.
# --log-bin-index: a name that does not exist, so that asking creates no
# binary log index in the data folder.
help_argv=("$@" --verbose --help --log-bin-index="$(mktemp -u)")
if ! settings=$("${help_argv[@]}" 2>/dev/null); then
    die "the server refuses its options ($*): $("${help_argv[@]}" 2>&1 >/dev/null)"
fi
setting() {
    awk -v name="$1" '$1 == name && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }' \
        <<<"$settings"
}
DATADIR=$(setting datadir)
DATADIR=${DATADIR%/}
SOCKET=$(setting socket)
if [ -z "$DATADIR" ] || [ -z "$SOCKET" ]; then
    die "no data folder or socket in the server's settings"
fi

ROOT_PASSWORD=${MYSQL_ROOT_PASSWORD:-}
ROOT_HOST=${MYSQL_ROOT_HOST:-%}
SKIP_TZINFO=${MYSQL_INITDB_SKIP_TZINFO:-}
# Under TCG emulation in a small VM a first start can take minutes.
START_TIMEOUT=${MYSQL_START_TIMEOUT:-600}

# A string made safe inside a SQL '...' literal (backslash escapes on: the
# session's sql_mode is set so, below).
sql_string() {
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\\\'}"
}

# SQL on stdin, as root over the socket of the temporary server (no option
# files: they may name another user); no password (none is set yet).
sql() {
    MYSQL_PWD='' mysql --no-defaults --protocol=socket --socket="$SOCKET" \
        --user=root --batch --skip-column-names "$@"
}

TEMP_PID=
temp_server_start() {
    note "starting a temporary server, socket only"
    "$@" --skip-networking --socket="$SOCKET" --default-time-zone=SYSTEM &
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

initialise() {
    [ -n "$ROOT_PASSWORD" ] ||
        die "the data folder $DATADIR is empty and MYSQL_ROOT_PASSWORD is not set"
    note "initialising the empty data folder $DATADIR"
    mkdir -p "$DATADIR"
    # root@localhost without a password, at first: set below. The
    # authentication plugin is the configuration's (Trove's template says
    # mysql_native_password for 8.0).
    "$@" --initialize-insecure --default-time-zone=SYSTEM
    temp_server_start "$@"
    if [ -z "$SKIP_TZINFO" ]; then
        note "loading the time zone tables"
        # 'Local time zone must be set': a bogus zone name in zoneinfo
        mysql_tzinfo_to_sql /usr/share/zoneinfo 2>/dev/null |
            sed 's/Local time zone must be set--see zic manual page/FCTY/' | sql mysql
    fi
    local password remote_root=''
    password=$(sql_string "$ROOT_PASSWORD")
    # root@'%' too, as the official image does when MYSQL_ROOT_HOST is
    # unset: the agent keeps it only when a restored backup had remote root
    # enabled (mysql_common/manager.py do_prepare); otherwise its
    # secure_root() deletes every root but root@localhost
    # (trove/guestagent/common/sql_query.py REMOVE_ROOT).
    if [ "$ROOT_HOST" != localhost ]; then
        local host
        host=$(sql_string "$ROOT_HOST")
        remote_root="CREATE USER 'root'@'$host' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO 'root'@'$host' WITH GRANT OPTION;
GRANT PROXY ON ''@'' TO 'root'@'$host' WITH GRANT OPTION;"
    fi
    note "setting root's password"
    sql mysql --binary-mode <<EOSQL
SET @@SESSION.SQL_LOG_BIN = 0;
SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
ALTER USER 'root'@'localhost' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
$remote_root
FLUSH PRIVILEGES;
EOSQL
    temp_server_stop
    note "data folder initialised"
}

if [ ! -d "$DATADIR/mysql" ]; then
    initialise "$@"
fi

trap - EXIT TERM INT
note "starting the server: $*"
exec "$@"
