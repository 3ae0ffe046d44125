#!/usr/bin/env sh
# Makes a self-signed development certificate for localhost / 127.0.0.1 in this directory:
#   certs/dev-key.pem, certs/dev-cert.pem (valid 30 days). Never use it for a real deployment.
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout dev-key.pem -out dev-cert.pem -days 30 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
chmod 600 dev-key.pem
echo "wrote $(pwd)/dev-key.pem and $(pwd)/dev-cert.pem"
