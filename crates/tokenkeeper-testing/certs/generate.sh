#!/usr/bin/env bash
# Test certificates for the mTLS tests (RFC 8705): NOT secrets — the keys are public test
# fixtures. Regenerate with `bash generate.sh` (OpenSSL 3); they are valid for 100 years.
#   ca.pem                    the test CA (tls_client_auth chains to it; it signs server.pem)
#   server.pem, server.key    the test server's TLS certificate: localhost, 127.0.0.1
#   worker.pem, worker.key    a client certificate from the CA, SAN DNS worker.clients.test
#   worker2.pem, worker2.key  the same client after rotation (a new key, the same name)
#   self.pem, self.key        a self-signed client certificate (self_signed_tls_client_auth)
set -euo pipefail
cd "$(dirname "$0")"
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec ca.key
openssl req -x509 -new -key ca.key -sha256 -days $days -subj "/CN=tokenkeeper test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
leaf() { # name, subject CN, SAN, extended key usage
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n" "$4" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -sha256 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm "$1.csr" "$1.ext"
}
leaf server localhost "DNS:localhost,IP:127.0.0.1" serverAuth
leaf worker worker "DNS:worker.clients.test" clientAuth
leaf worker2 worker "DNS:worker.clients.test" clientAuth
ec self.key
openssl req -x509 -new -key self.key -sha256 -days $days -subj "/CN=self-signed worker" \
  -addext "basicConstraints=CA:FALSE" -addext "extendedKeyUsage=clientAuth" \
  -addext "subjectAltName=DNS:self.clients.test" -out self.pem
rm -f ca.srl ca.key
