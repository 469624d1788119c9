#!/usr/bin/env bash
# A TLS front for the test S3 server: haproxy on 127.0.0.1 terminates HTTPS
# with a certificate signed by a private CA made here with openssl, and
# passes the plain stream on to the S3 server, so the S3 tests can reach
# the same Ceph RGW over http:// and over https:// with a private CA.
#
#   bash scripts/s3-tls-front.sh start BACKEND_URL DIR   # BACKEND_URL: http://127.0.0.1:PORT
#   bash scripts/s3-tls-front.sh stop DIR
#
# start writes DIR/ca.pem (the CA's certificate, the only thing a client
# must trust), DIR/server.pem (leaf certificate + key, for haproxy),
# DIR/haproxy.cfg and DIR/haproxy.pid, waits until the port answers, then
# prints these lines and writes them to DIR/s3-tls.env:
#
#   S3_HTTPS_ENDPOINT=https://127.0.0.1:PORT
#   S3_CA_FILE=DIR/ca.pem
#
# stop kills only the haproxy whose pid DIR/haproxy.pid records.
# Needs haproxy, openssl and python3 (scripts/install-deps.sh).
set -euo pipefail

usage() {
    echo "usage: $0 start http://127.0.0.1:PORT DIR | stop DIR" >&2
    exit 2
}

cmd=${1:-}
case "$cmd" in
stop)
    dir=${2:?$(usage)}
    if [ -f "$dir/haproxy.pid" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        done <"$dir/haproxy.pid"
        rm -f "$dir/haproxy.pid"
    fi
    exit 0
    ;;
start) ;;
*) usage ;;
esac

backend=${2:-}
dir=${3:-}
[ -n "$backend" ] && [ -n "$dir" ] || usage
hostport=${backend#http://}
hostport=${hostport%/}
if [ "$hostport" = "$backend" ] || [ -z "$hostport" ]; then
    echo "$0: backend must be an http:// URL, not $backend" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# A CA (basicConstraints CA:TRUE) and a leaf it signs for 127.0.0.1 and
# localhost (CA:FALSE, serverAuth): rustls, like browsers, refuses a CA
# certificate presented as the server's own.
cat >"$dir/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = berth test S3 CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 2 -config "$dir/openssl.cnf" -extensions ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=127.0.0.1 -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/openssl.cnf" -extensions leaf \
    -out "$dir/server.crt" 2>/dev/null
cat "$dir/server.crt" "$dir/server.key" >"$dir/server.pem"
chmod 600 "$dir/ca.key" "$dir/server.key" "$dir/server.pem"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# TCP mode: TLS is terminated here and the HTTP stream goes on unchanged, so
# the Host header the client signed reaches RGW as signed.
cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 512
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend s3_tls
  bind 127.0.0.1:$port ssl crt $dir/server.pem
  default_backend s3
backend s3
  server rgw $hostport
EOF
haproxy -D -p "$dir/haproxy.pid" -f "$dir/haproxy.cfg"

for _ in $(seq 1 100); do
    if openssl s_client -connect "127.0.0.1:$port" -CAfile "$dir/ca.pem" \
        -verify_return_error </dev/null >/dev/null 2>&1; then
        {
            echo "S3_HTTPS_ENDPOINT=https://127.0.0.1:$port"
            echo "S3_CA_FILE=$dir/ca.pem"
        } | tee "$dir/s3-tls.env"
        exit 0
    fi
    sleep 0.1
done
echo "$0: haproxy did not answer TLS on 127.0.0.1:$port" >&2
bash "$0" stop "$dir"
exit 1
