#!/usr/bin/env bash
# Make a self-signed certificate for localhost / 127.0.0.1, valid for 30 days.
# For demos and manual testing only; production needs a certificate from a real CA.
#
#   certs/make-demo-cert.sh OUT_DIR      # writes OUT_DIR/cert.pem and OUT_DIR/key.pem
#
# deploy/demo/up.sh calls this with deploy/demo/run/. Nothing it writes is committed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"

# -nodes: the key is not encrypted (Ferry reads it unattended). OpenSSL 3 writes it as
# PKCS#8 ("BEGIN PRIVATE KEY"), one of the formats Ferry accepts.
# OpenSSL prints key-generation progress on stderr: keep it only for a failure.
if ! log=$(openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$out/key.pem" -out "$out/cert.pem" 2>&1); then
    printf '%s\n' "$log" >&2
    echo "$0: openssl could not make the certificate" >&2
    exit 1
fi
chmod 600 "$out/key.pem"
