#!/bin/sh
# Read secrets from files (Docker/Kubernetes secrets) into the variables the clients read,
# so no password is ever written in compose.yaml, a manifest, a study file or a URL.
#   PGPASSWORD_FILE -> PGPASSWORD (libpq/psycopg use it when the URL carries no password)
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ] && [ -z "${PGPASSWORD:-}" ]; then
    if [ ! -r "$PGPASSWORD_FILE" ]; then
        echo "rksearch entrypoint: PGPASSWORD_FILE=$PGPASSWORD_FILE is not readable by uid $(id -u)" >&2
        exit 64
    fi
    PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
    export PGPASSWORD
fi
exec "$@"
