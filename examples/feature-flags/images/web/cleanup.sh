#!/bin/sh
# Leave nothing of the build behind: package lists and caches, apt logs, temporary files.
# Packer removes its own uploaded scripts; the checks in serverspec/ prove that nothing remains.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old
find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name "$(basename "$0")" -exec rm -rf {} +
