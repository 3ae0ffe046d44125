#!/usr/bin/env sh
# Makes a development PKI in this directory (valid 30 days) — never for a real deployment:
#   dev-ca.pem / dev-ca-key.pem          a throw-away certificate authority
#   dev-cert.pem / dev-key.pem           server certificate for localhost and 127.0.0.1
#   dev-client.pem / dev-client-key.pem  client certificate (mutual TLS, --client-ca dev-ca.pem)
set -eu
cd "$(dirname "$0")"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout dev-ca-key.pem -out dev-ca.pem -subj "/CN=ofc-signer development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA dev-ca.pem -CAkey dev-ca-key.pem -CAcreateserial \
    -days 30 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue dev-server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
mv dev-server.pem dev-cert.pem && mv dev-server-key.pem dev-key.pem
issue dev-client "/CN=ofc-signer development client" "extendedKeyUsage=clientAuth"
rm -f dev-ca.srl
echo "wrote dev-ca.pem, dev-cert.pem/dev-key.pem, dev-client.pem/dev-client-key.pem in $(pwd)"
