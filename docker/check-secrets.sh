#!/bin/sh
# Refuse to start the stack on example secrets: each variable named must be set, must not be a
# `change-me` placeholder of .env.example, and must have at least 16 characters.
#
#   check-secrets.sh VARIABLE...      (run by broker-init.sh before anything else starts)
#
# docker-compose's ${VAR:?} only catches an unset variable; a copied .env.example would start a
# stack whose InfluxDB admin password, API token and dashboard read token everyone can read in
# the repository. Exit 1 names every bad variable and how to make a good value.
set -u
bad=0
for name in "$@"; do
  value=$(printenv "$name" || true)
  case "$value" in
    "") problem="is not set" ;;
    change-me*|CHANGE-ME*|Change-me*) problem="is still the placeholder '$value' from .env.example" ;;
    *) if [ "${#value}" -lt 16 ]; then problem="has ${#value} characters, fewer than 16"; else problem=""; fi ;;
  esac
  if [ -n "$problem" ]; then
    echo "check-secrets: $name $problem" >&2
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then
  echo "check-secrets: edit docker/.env; make each secret with:" \
    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'" >&2
  exit 1
fi
echo "check-secrets: $# secrets set"
