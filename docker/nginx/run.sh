#!/bin/sh
# Run the consumer nginx outside Docker: render wordstream.conf.template the
# way the official image does and start Debian's nginx in the foreground.
#
# Usage: docker/nginx/run.sh [PREFIX]
# PREFIX (default .run/nginx) receives the configuration, logs and temporary
# files. The template's variables come from the environment, with defaults
# for a producer on 127.0.0.1:8000:
#   LISTEN_PORT    port or address:port to listen on (127.0.0.1:3000)
#   STATIC_ROOT    folder of the page's files (the repository's shared/)
#   PRODUCER_HOST  producer's IP address or host name (127.0.0.1)
#   PRODUCER_PORT  producer's port (8000)
#   RESOLVER       DNS server for a PRODUCER_HOST that is a name (the first
#                  nameserver of /etc/resolv.conf)
# NGINX names the binary (nginx from PATH, else /usr/sbin/nginx).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=${1:-$root/.run/nginx}

nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
if [ ! -x "$nginx" ]; then
    echo "nginx is not installed: install it with 'apt-get install nginx-light' (or nginx)" >&2
    exit 1
fi
if ! command -v envsubst >/dev/null; then
    echo "envsubst is not installed: install it with 'apt-get install gettext-base'" >&2
    exit 1
fi

first_nameserver() {
    awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf 2>/dev/null
}

LISTEN_PORT=${LISTEN_PORT:-127.0.0.1:3000}
STATIC_ROOT=${STATIC_ROOT:-$root/shared}
PRODUCER_HOST=${PRODUCER_HOST:-127.0.0.1}
PRODUCER_PORT=${PRODUCER_PORT:-8000}
RESOLVER=${RESOLVER:-$(first_nameserver)}
RESOLVER=${RESOLVER:-127.0.0.1}
# nginx's resolver directive takes an IPv6 address in brackets.
case $RESOLVER in
    *:*:*) case $RESOLVER in \[*) ;; *) RESOLVER="[$RESOLVER]" ;; esac ;;
esac
export LISTEN_PORT STATIC_ROOT PRODUCER_HOST PRODUCER_PORT RESOLVER

mkdir -p "$prefix/conf.d" "$prefix/logs" "$prefix/temp"
cp "$here/native.conf" "$prefix/nginx.conf"
# Only the template's own variables: nginx's ($uri, $host, ...) stay as they are.
# shellcheck disable=SC2016
envsubst '${LISTEN_PORT} ${STATIC_ROOT} ${PRODUCER_HOST} ${PRODUCER_PORT} ${RESOLVER}' \
    <"$here/wordstream.conf.template" >"$prefix/conf.d/wordstream.conf"

# Started by root, nginx would run its worker as nobody, which cannot read
# files under a private folder such as a test's temporary directory.
if [ "$(id -u)" = 0 ]; then
    set -- -g "user root;"
else
    set --
fi
echo "nginx on $LISTEN_PORT: $STATIC_ROOT, proxying to $PRODUCER_HOST:$PRODUCER_PORT"
exec "$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" "$@"
