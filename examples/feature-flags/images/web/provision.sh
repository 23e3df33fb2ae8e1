#!/bin/sh
# Install Apache and publish "Hello World $VERSION" on port 80, plus a health endpoint at /health,
# and the application part: /feature, a page a feature flag controls (Apache's mod_wsgi runs
# images/web/app/app.wsgi, uploaded to /tmp/app by the template's file provisioner).
# Runs as root in the docker source and through sudo on an EC2 instance (user admin).
set -eu

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

: "${VERSION:?VERSION must be set (the template passes var.version)}"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# mod_wsgi: the app runs inside the Apache the image already runs (one server, PID 1, graceful
# stop); python3-redis is the provider's Redis client. Both from Debian: nothing from PyPI.
apt-get install -y -q --no-install-recommends apache2 libapache2-mod-wsgi-py3 python3-redis

# The page and the health endpoint.
printf 'Hello World %s\n' "$VERSION" > /var/www/html/index.html
printf 'OK\n' > /var/www/html/health
cat > /etc/apache2/conf-available/hello-web.conf <<'CONF'
ServerName localhost
ServerTokens Prod
ServerSignature Off
<Location "/health">
    ForceType text/plain
    Header always set Cache-Control "no-store"
</Location>
CONF
a2enmod -q headers

# The application: /feature, evaluated per request through OpenFeature (see app/app.wsgi).
mkdir -p /opt/hello-web /etc/hello-web
cp -R /tmp/app/. /opt/hello-web/
printf '%s\n' "$VERSION" > /etc/hello-web/version
if [ -n "${FEATURE_FAULT:-}" ]; then printf '%s\n' "$FEATURE_FAULT" > /etc/hello-web/feature-fault; fi
cat > /etc/apache2/conf-available/hello-web-app.conf <<'CONF'
WSGIDaemonProcess hello-web processes=2 threads=8 display-name=%{GROUP} home=/opt/hello-web
WSGIProcessGroup hello-web
WSGIApplicationGroup %{GLOBAL}
WSGIScriptAlias /feature /opt/hello-web/app.wsgi
<Directory /opt/hello-web>
    Require all granted
</Directory>
CONF
a2enmod -q wsgi
a2enconf -q hello-web
a2enconf -q hello-web-app

# The container's foreground process: Apache itself as PID 1, so `docker stop` (SIGTERM) stops it at
# once and SIGWINCH stops it gracefully (apache2ctl would stay PID 1 as a shell that ignores SIGTERM).
# On an EC2 instance systemd starts Apache instead; this file is then unused.
cat > /usr/local/sbin/apache2-foreground <<'SCRIPT'
#!/bin/sh
set -e
. /etc/apache2/envvars
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
rm -f "$APACHE_PID_FILE"
exec /usr/sbin/apache2 -D FOREGROUND "$@"
SCRIPT
chmod 0755 /usr/local/sbin/apache2-foreground

# Logs go to the container's output (docker logs); on an instance, to the journal.
ln -sf /dev/stdout /var/log/apache2/access.log
ln -sf /dev/stderr /var/log/apache2/error.log

apache2ctl -t
