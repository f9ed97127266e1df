#!/bin/sh
# One-shot service of docker-compose.yml, run as root before anything else starts:
# 1. refuses placeholder secrets (check-secrets.sh): every other service waits for this one;
# 2. the broker's users, ACL and config for the demo site, and its TLS files;
# 3. the accounting service's API token, read token and HTTPS certificate, as files.
# Each file is owned by the container that reads it: Mosquitto 2.0 drops to its own user (uid
# 1883 in eclipse-mosquitto) before it reads passwd, acl and the server key; the Tanji images
# run as uid 10001. Re-running keeps every password (tanji broker-config never rotates unless
# asked); the tokens follow docker/.env.
set -eu
sh /opt/tanji/docker/check-secrets.sh TANJI_INFLUX_TOKEN INFLUXDB_ADMIN_PASSWORD GRAFANA_ADMIN_PASSWORD \
  TANJI_API_TOKEN TANJI_READ_TOKEN
tanji broker-config /etc/tanji/site.yaml --out /broker --secrets-dir /etc/tanji/secrets \
  --config-dir /mosquitto/config --certs-dir /mosquitto/config/certs --data-dir /mosquitto/data \
  --port 8883 --plain-port 1883 "$@"
mkdir -p /broker/certs
cp /certs/ca.crt /certs/server.crt /certs/server.key /broker/certs/
chmod 0644 /broker/certs/ca.crt /broker/certs/server.crt
chmod 0600 /broker/certs/server.key
chown -R 1883:1883 /broker

umask 077
printf '%s\n' "$TANJI_API_TOKEN" > /etc/tanji/secrets/api-token
printf '%s\n' "$TANJI_READ_TOKEN" > /etc/tanji/secrets/read-token
# The accounting service serves HTTPS with the same CA's server certificate (make-certs.sh puts
# localhost, 127.0.0.1 and the names you gave it in; add the name browsers use).
mkdir -p /etc/tanji/secrets/tls
cp /certs/ca.crt /certs/server.crt /certs/server.key /etc/tanji/secrets/tls/
chown -R 10001:10001 /etc/tanji/secrets
