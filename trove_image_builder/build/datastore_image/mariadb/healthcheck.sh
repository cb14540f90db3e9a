#!/bin/bash
# Health check of the mariadb image built by trove-image-builder (Debian
# ships none). Trove's agent runs, as the container's user:
#
#   healthcheck.sh --defaults-file /var/lib/mysql/data/.my-healthcheck.cnf \
#       --connect --innodb_initialized
#
# and counts the container healthy when this exits 0. Options (in any
# order; the tests run in the order given, all must pass):
#
#   --defaults-file F, --defaults-extra-file F (also --opt=F)
#                          option files for the mariadb client; without
#                          either, DATADIR/.my-healthcheck.cnf if present
#   --no-defaults          no option files at all
#   --datadir D            where that default file is (/var/lib/mysql/data)
#   --connect              the server answers, and with networking on (the
#                          entrypoint's temporary setup server has it off)
#   --innodb_initialized   InnoDB has finished starting (crash recovery done)
#   --innodb_buffer_pool_loaded
#                          the buffer pool dump has been loaded
set -eu
set -o pipefail

defaults=()
no_defaults=''
datadir=/var/lib/mysql/data
tests=()

while [ $# -gt 0 ]; do
    case "$1" in
        --defaults-file | --defaults-extra-file)
            [ $# -ge 2 ] || { echo "healthcheck: $1 needs a file" >&2; exit 2; }
            defaults=("$1=$2")
            shift
            ;;
        --defaults-file=* | --defaults-extra-file=*) defaults=("$1") ;;
        --no-defaults) no_defaults=yes ;;
        --datadir)
            [ $# -ge 2 ] || { echo "healthcheck: --datadir needs a folder" >&2; exit 2; }
            datadir=$2
            shift
            ;;
        --datadir=*) datadir=${1#*=} ;;
        --connect | --innodb_initialized | --innodb_buffer_pool_loaded)
            tests+=("${1#--}")
            ;;
        *)
            echo "healthcheck: unknown option or test: $1" >&2
            exit 2
            ;;
    esac
    shift
done
[ ${#tests[@]} -gt 0 ] || { echo "healthcheck: name at least one test" >&2; exit 2; }

if [ -n "$no_defaults" ]; then
    defaults=(--no-defaults)
elif [ ${#defaults[@]} -eq 0 ] && [ -f "$datadir/.my-healthcheck.cnf" ]; then
    defaults=("--defaults-extra-file=$datadir/.my-healthcheck.cnf")
fi

# One query; its answer on stdout. The option file goes first: the client
# takes --defaults-file and friends only there.
query() {
    local protocol=$1
    shift
    mariadb "${defaults[@]}" --protocol="$protocol" --skip-ssl --batch \
        --skip-column-names "$@"
}

connect() {
    local answer
    if answer=$(query socket -e 'SELECT @@skip_networking' 2>/dev/null); then
        if [ "$answer" = 0 ]; then
            return 0
        fi
        echo "healthcheck: the server runs without networking (still being set up)" >&2
        return 1
    fi
    # No answer over the socket: does the server answer over TCP? Any error
    # from the server itself (access denied, ...) means it does.
    answer=$(query tcp --host=localhost -e 'SELECT @@skip_networking' 2>&1) || true
    case "$answer" in
        0 | "ERROR 1"[0-9][0-9][0-9]" "*) return 0 ;;
    esac
    echo "healthcheck: no answer from the server: $answer" >&2
    return 1
}

innodb_initialized() {
    local answer
    answer=$(query socket -e "SELECT 1 FROM information_schema.ENGINES
        WHERE engine = 'InnoDB' AND support IN ('YES', 'DEFAULT', 'ENABLED')") || return 1
    [ "$answer" = 1 ] || { echo "healthcheck: InnoDB is not initialised" >&2; return 1; }
}

innodb_buffer_pool_loaded() {
    local answer
    answer=$(query socket -e "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS
        WHERE VARIABLE_NAME = 'Innodb_buffer_pool_load_status'") || return 1
    case "$answer" in
        *"load completed"*) return 0 ;;
    esac
    echo "healthcheck: buffer pool not loaded: $answer" >&2
    return 1
}

for test in "${tests[@]}"; do
    case "$test" in
        connect) connect ;;
        innodb_initialized) innodb_initialized ;;
        innodb_buffer_pool_loaded) innodb_buffer_pool_loaded ;;
    esac || exit 1
done
exit 0
