#!/bin/sh
# Start PostgreSQL as the container's process, making the cluster on the first start.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
DATA=/var/lib/postgresql/data
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$DATA" /run/postgresql
chown postgres:postgres "$DATA" /run/postgresql
chmod 0700 "$DATA"
if [ ! -s "$DATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$DATA.new" -U "$POSTGRES_USER" --pwfile="$pwfile" -A scram-sha-256 --auth-local=trust \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null 2>&1 || as_postgres initdb -D "$DATA.new" -U "$POSTGRES_USER" \
        --pwfile="$pwfile" -A scram-sha-256 --auth-local=trust --encoding=UTF8 --locale=C
    rm -f "$pwfile"
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/run/postgresql'"
    } >> "$DATA.new/postgresql.conf"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$DATA.new/pg_hba.conf"
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
        | as_postgres postgres --single -D "$DATA.new" -j postgres >/dev/null
    # the volume's mount point itself cannot be renamed: move the finished cluster into it
    mv "$DATA.new"/* "$DATA"/ && rmdir "$DATA.new"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$DATA"
