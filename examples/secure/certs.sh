#!/usr/bin/env bash
# Writes the certificates of Ferry's secure example into DIR: a throwaway
# certificate authority (ca.pem, ca-key.pem), a server certificate for
# 127.0.0.1 and localhost (server.pem, server-key.pem) and a client
# certificate whose common name is alice (client.pem, client-key.pem).
# Every key is new on each run; none is for production use.
#
#   bash examples/secure/certs.sh DIR
set -euo pipefail

dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
command -v openssl >/dev/null || { echo "certs.sh needs openssl" >&2; exit 1; }

days=30
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ec ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=Ferry example CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem

# issue NAME CN EXTENSIONS: a key and a certificate signed by the CA.
issue() {
  local name=$1 cn=$2 ext=$3
  ec "$name-key.pem"
  openssl req -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr"
  printf '%s\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days "$days" \
    -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

issue server 127.0.0.1 "subjectAltName=IP:127.0.0.1,DNS:localhost
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
issue client alice "keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 600 ./*-key.pem
echo "wrote ca.pem, server.pem, server-key.pem, client.pem and client-key.pem to $dir"
