#!/usr/bin/env bash
# Quick throughput probe (the benchmark suite is separate): 64 closed-loop clients for 10 s
# against the HTTP demo upstream directly, then through capgate with durable SQLite audit;
# prints both, the audit record/commit counters (records per fsync) and `audit verify`.
# Build first: cargo build --release --bin capgate --example quick_load
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/capgate
LOAD=$ROOT/target/release/examples/quick_load
D=$(mktemp -d); cd $D
$BIN upstream-demo --http 127.0.0.1:0 --state $D/state --no-record > up.out &
UP=$!
sleep 0.5; UPURL=$(awk '{print $NF}' up.out)
for n in issuer audit; do $BIN keys generate --out keys --name $n >/dev/null; done
mkdir contracts; echo '{"tool":"list_tickets","allowed_roles":["viewer"],"arg_schema":{},"side_effects":"read"}' > contracts/t.json
cat > capgate.toml <<T
contracts = "contracts/"
[[environment]]
name = "dev"
listen = "127.0.0.1:0"
public_url = "http://lat.test/mcp"
[environment.identity]
issuer = "https://idp.lat.test"
jwks = "keys/issuer.jwks.json"
mint_key = "keys/issuer.pem"
[environment.audit]
store = "sqlite://data/audit.db"
signing_key = "keys/audit.pem"
[[upstream]]
name = "demo"
environment = "dev"
url = "$UPURL"
T
TOK=$($BIN token mint --config capgate.toml --env dev --sub load --roles viewer --ttl 1h)
CAPGATE_LOG=error $BIN serve --config capgate.toml > gw.out &
GW=$!
sleep 0.7; GWURL=$(grep -o 'http://[^ ]*/mcp' gw.out | head -1); BASE=${GWURL%/mcp}
echo "direct:"; $LOAD $UPURL x 64 10 list_tickets
M0=$(curl -s $BASE/metrics | grep -E '^capgate_audit_(records|commits)_total' )
echo "gateway:"; $LOAD $GWURL $TOK 64 10 list_tickets
curl -s $BASE/metrics | grep -E '^capgate_audit_(records|commits)_total'
echo "before: $M0"
kill $GW $UP; wait 2>/dev/null || true
$BIN audit verify --config capgate.toml --env dev | tail -2
