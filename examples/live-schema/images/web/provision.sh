#!/bin/sh
# Install the app server: Python 3 with Debian's psycopg2, the app in /opt/app, the release it
# says on its page. Runs as root in the docker source and through sudo on an EC2 instance.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

: "${VERSION:?VERSION must be set (the template passes var.version)}"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends python3-minimal python3-psycopg2

install -d -m 0755 /opt/app
install -m 0644 /tmp/app.py /opt/app/app.py
printf '%s\n' "$VERSION" > /opt/app/RELEASE
rm -f /tmp/app.py
/usr/bin/python3 -m py_compile /opt/app/app.py

# On an EC2 instance systemd starts the app with the database's variables (written by the launch
# template's user data into /etc/default/live-schema); in a container it is the entrypoint.
mkdir -p /etc/systemd/system
cat > /etc/systemd/system/live-schema.service <<'UNIT'
[Unit]
Description=live-schema app server
After=network-online.target

[Service]
EnvironmentFile=-/etc/default/live-schema
ExecStart=/usr/bin/python3 /opt/app/app.py
Restart=always

[Install]
WantedBy=multi-user.target
UNIT

# Leave nothing of the build behind.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old
find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name "$(basename "$0")" -exec rm -rf {} +
