#!/usr/bin/env bash
# A private CA and the broker's server certificate, for Mosquitto's TLS listener (port 8883).
# Run once before `docker-compose up`; nothing here is committed (docker/certs/ is ignored).
#
#   docker/make-certs.sh [OUT_DIR] [EXTRA_NAME ...]
#
# OUT_DIR defaults to docker/certs. The server certificate is valid for "mosquitto" (its name
# on the compose network), "localhost", 127.0.0.1 and every EXTRA_NAME (the DNS names or IP
# addresses edge boxes use to reach the broker: add them, or gateways will refuse the broker).
# An existing CA is kept, so gateways that already trust ca.crt keep working when the server
# certificate is re-issued; delete OUT_DIR to start over. Private keys are written 0600.
set -euo pipefail
out="${1:-$(dirname "$0")/certs}"
shift || true
mkdir -p "$out"
cd "$out"
umask 077

if [ ! -f ca.key ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=Tanji/CN=Tanji broker CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null
fi

san="DNS:mosquitto,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
done
openssl ecparam -name prime256v1 -genkey -noout -out server.key
openssl req -new -key server.key -subj "/O=Tanji/CN=mosquitto" -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 825 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
echo "make-certs: $out/ca.crt (give it to every gateway), $out/server.crt and server.key for $san"
