#!/bin/bash
# Entrypoint of the postgres image built by trove-image-builder from Debian
# packages. It does what Trove's guest agent expects of the official image
# (the contract: trove_image_builder/build/datastore_image/__init__.py):
#
# - runs as whatever uid:gid the container is given (the agent passes
#   database_service_uid:gid, 1001:1001 by default); it never switches user
#   nor changes ownership, and writes only to PGDATA and temporary folders;
# - "postgres ..." (the agent passes "postgres -c config_file=...") or a
#   command starting with an option runs the server; on an empty PGDATA it
#   first runs initdb: superuser 'postgres' (POSTGRES_USER) with the password
#   POSTGRES_PASSWORD, trust over the socket, scram-sha-256 over TCP, as the
#   official image does;
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

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
for arg in "$@"; do
    case "$arg" in
        --help | -'?' | --version | -V | --describe-config | -C) exec "$@" ;;
    esac
done

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
SUPERUSER=${POSTGRES_USER:-postgres}
HOST_AUTH=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

# initdb wants a name for the uid it runs as. The image has one for Trove's
# default uid 1001 ('database' in /etc/passwd); any other uid gets a passwd
# and group file of its own through nss_wrapper, for initdb only (the server
# itself does not look its uid up).
with_a_user_name() {
    if getent passwd "$(id -u)" >/dev/null; then
        "$@"
        return
    fi
    local wrapper folder
    wrapper=$(find /usr/lib -name libnss_wrapper.so -print -quit)
    [ -n "$wrapper" ] || die "uid $(id -u) has no passwd entry and nss_wrapper is missing"
    folder=$(mktemp -d)
    echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PGDATA:/bin/false" >"$folder/passwd"
    echo "postgres:x:$(id -g):" >"$folder/group"
    local rc=0
    LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD=$folder/passwd NSS_WRAPPER_GROUP=$folder/group \
        "$@" || rc=$?
    rm -rf "$folder"
    return "$rc"
}

initialise() {
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$HOST_AUTH" != trust ]; then
        die "PGDATA $PGDATA is empty and POSTGRES_PASSWORD is not set"
    fi
    note "initialising the empty PGDATA $PGDATA"
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" 2>/dev/null || true
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS: words, as officially
    set -- initdb --username="$SUPERUSER" --auth-local=trust --auth-host="$HOST_AUTH" \
        ${POSTGRES_INITDB_ARGS:-}
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        # through a pipe: never on a command line, never on disk
        with_a_user_name "$@" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >&2
    else
        with_a_user_name "$@" >&2
    fi
    # initdb's host lines cover only 127.0.0.1 and ::1: every address, as
    # the official image allows (Trove replaces this file with its own
    # hba_file, postgres/service.py apply_access_rules).
    printf '\nhost all all all %s\n' "$HOST_AUTH" >>"$PGDATA/pg_hba.conf"
    note "PGDATA initialised"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initialise
fi
note "starting the server: $*"
exec "$@"
