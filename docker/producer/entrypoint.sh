#!/bin/sh
# Entry point of the producer image: provide DJANGO_SECRET_KEY, then run the
# command (the server, a migration or the word worker).
#
# Without DJANGO_SECRET_KEY, the key is read from DJANGO_SECRET_KEY_FILE,
# and a random one is written there first if the file does not exist yet.
# Every container that mounts the same volume gets the same key, as Django's
# sessions and CSRF tokens need across replicas.
set -eu

if [ -z "${DJANGO_SECRET_KEY:-}" ] && [ -n "${DJANGO_SECRET_KEY_FILE:-}" ]; then
    if [ ! -s "$DJANGO_SECRET_KEY_FILE" ]; then
        umask 077
        mkdir -p "$(dirname "$DJANGO_SECRET_KEY_FILE")"
        new_key=$(mktemp "$DJANGO_SECRET_KEY_FILE.XXXXXX")
        python -c "import secrets; print(secrets.token_urlsafe(50))" >"$new_key"
        # ln fails when another container created the file meanwhile, so all
        # of them end up with that one key.
        ln "$new_key" "$DJANGO_SECRET_KEY_FILE" 2>/dev/null || true
        rm -f "$new_key"
    fi
    DJANGO_SECRET_KEY=$(cat "$DJANGO_SECRET_KEY_FILE")
    export DJANGO_SECRET_KEY
fi

exec "$@"
