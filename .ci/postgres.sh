# Sourced by .ci/run: start a throw-away PostgreSQL server on loopback for the `postgres` tests.
#
# On success it exports RKSEARCH_TEST_POSTGRES_URL (a trust-auth server on 127.0.0.1 at a free
# port, database rksearch_test) and registers an EXIT trap that stops the server and deletes its
# data directory.  On any failure it prints why and returns normally, so the test run goes on and
# the postgres tests skip with their reason.  Nothing here may abort the sourcing shell (which runs
# under `set -e`), hence the explicit `|| { ...; return 1; }` on every step.

RKSEARCH_PG_BIN=/usr/lib/postgresql/15/bin

# Run a command as the postgres user when we are root (initdb refuses to run as root),
# as ourselves otherwise.
_rksearch_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_rksearch_pg_install() {
    [ -x "$RKSEARCH_PG_BIN/initdb" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "postgres: $RKSEARCH_PG_BIN/initdb is missing and we are not root to apt-get install it"
        return 1
    fi
    echo "postgres: installing the postgresql package"
    apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
        || { echo "postgres: apt-get install -y postgresql failed"; return 1; }
    [ -x "$RKSEARCH_PG_BIN/initdb" ] \
        || { echo "postgres: installed, but $RKSEARCH_PG_BIN/initdb is not there (another major version?)"; return 1; }
}

rksearch_pg_stop() {
    [ -n "${RKSEARCH_PG_DIR:-}" ] || return 0
    _rksearch_pg_as_owner "$RKSEARCH_PG_BIN/pg_ctl" -D "$RKSEARCH_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$RKSEARCH_PG_DIR"
    unset RKSEARCH_PG_DIR RKSEARCH_TEST_POSTGRES_URL
}

_rksearch_pg_start() {
    _rksearch_pg_install || return 1
    RKSEARCH_PG_DIR=$(mktemp -d /tmp/rksearch-pg.XXXXXX) || { echo "postgres: mktemp failed"; return 1; }
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$RKSEARCH_PG_DIR" || { echo "postgres: no 'postgres' user to own the data dir"; return 1; }
    fi
    _rksearch_pg_as_owner "$RKSEARCH_PG_BIN/initdb" -D "$RKSEARCH_PG_DIR/data" -A trust -U postgres \
        >"$RKSEARCH_PG_DIR/initdb.log" 2>&1 \
        || { echo "postgres: initdb failed:"; tail -n 5 "$RKSEARCH_PG_DIR/initdb.log"; return 1; }
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
        || { echo "postgres: could not find a free port"; return 1; }
    _rksearch_pg_as_owner "$RKSEARCH_PG_BIN/pg_ctl" -D "$RKSEARCH_PG_DIR/data" -l "$RKSEARCH_PG_DIR/server.log" -w \
        -o "-h 127.0.0.1 -p $port -k $RKSEARCH_PG_DIR" start >/dev/null \
        || { echo "postgres: the server did not start:"; tail -n 5 "$RKSEARCH_PG_DIR/server.log"; return 1; }
    _rksearch_pg_as_owner "$RKSEARCH_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres rksearch_test \
        || { echo "postgres: createdb rksearch_test failed"; return 1; }
    export RKSEARCH_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/rksearch_test"
    echo "postgres: running at $RKSEARCH_TEST_POSTGRES_URL (data in $RKSEARCH_PG_DIR)"
}

trap rksearch_pg_stop EXIT
_rksearch_pg_start || { echo "postgres: tests marked 'postgres' will skip"; rksearch_pg_stop; }
