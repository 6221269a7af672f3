#!/bin/sh
# Make sure the PostgreSQL and Redis servers the tests talk to are up; start them when they are not.
set -eu
pg_host=${PGHOST:-127.0.0.1}
wait_for() { # command, what
    i=0
    until sh -c "$1" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then echo "error: $2 did not come up" >&2; exit 1; fi
        sleep 0.5
    done
}
if ! pg_isready -q -h "$pg_host" -p 5432 2>/dev/null; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_for "pg_isready -q -h $pg_host -p 5432" PostgreSQL
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis" >&2
    mkdir -p /var/lib/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis
    wait_for "redis-cli -h 127.0.0.1 -p 6379 ping" Redis
fi
