#!/bin/sh
# One-shot service of docker-compose.yml, run as root before Mosquitto starts: the broker's
# users, ACL and config for the demo site, the TLS files, each owned by the container that
# reads it. Mosquitto 2.0 drops to its own user (uid 1883 in eclipse-mosquitto) before it
# reads passwd, acl and the server key; the Tanji images run as uid 10001.
# Re-running keeps every password (tanji broker-config never rotates unless asked).
set -eu
tanji broker-config /etc/tanji/site.yaml --out /broker --secrets-dir /etc/tanji/secrets \
  --config-dir /mosquitto/config --certs-dir /mosquitto/config/certs --data-dir /mosquitto/data \
  --port 8883 --plain-port 1883 "$@"
mkdir -p /broker/certs
cp /certs/ca.crt /certs/server.crt /certs/server.key /broker/certs/
chmod 0644 /broker/certs/ca.crt /broker/certs/server.crt
chmod 0600 /broker/certs/server.key
chown -R 1883:1883 /broker
chown -R 10001:10001 /etc/tanji/secrets
