#!/bin/bash
# The image's HEALTHCHECK: GET /ping on the inference listener (port 8080, or HEALTHCHECK_PORT),
# healthy when it answers 200. /ping needs no key, even with token authorization on. The image
# carries no HTTP client, so this is bash's /dev/tcp and one HTTP/1.0 request line.
set -eu
exec 3<>"/dev/tcp/127.0.0.1/${HEALTHCHECK_PORT:-8080}"
printf 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 3 status <&3
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "unhealthy: ${status%$'\r'}" >&2; exit 1 ;;
esac
