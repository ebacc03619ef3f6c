#!/usr/bin/env bash
# zt next to its peers on loopback, one run, the same workloads through every path.
#
#   benches/peers.sh            full comparison (installs iperf3, socat, openssh and rathole
#                               when missing; builds the zt binary in release)
#   benches/peers.sh --smoke    CI check, no installs, no timing: a hash-checked echo of
#                               random bytes through the zt path and through a plain relay
#
# Paths, each in front of the same origins on 127.0.0.1:
#   direct      no hop
#   socat       plain single-hop TCP relay (socat fork)
#   rathole     rathole server + client, plain TCP transport
#   rathole-noise  the same with the Noise transport (Noise_NK_25519_ChaChaPoly_BLAKE2s)
#   ssh -L      OpenSSH local forward through sshd on loopback (default cipher)
#   zt          the real binaries: zt edge run, zt tunnel run (4 HA connections),
#               zt client forward (client -> edge -> connector -> origin), over QUIC
#   zt-tcp      the same with the client leg over TLS on TCP (zt client --protocol tcp,
#               what a network that drops UDP gets); the connector stays on QUIC
#   cfd-quic    zt client forward -> an edge of its own -> the unmodified cloudflared
#               binary as the tunnel's connector (--protocol quic) -> origin
#   cfd-http2   the same with cloudflared's --protocol http2 (TLS over TCP to the edge)
#               (both skipped, loudly, without the binary: ZT_CLOUDFLARED, default
#               ../shared/interop/cloudflared-2026.8.2/cloudflared beside the project)
# Workloads: iperf3 -t $ZT_PEERS_SECONDS (default 5) with 1 stream and with 8 (-P 8),
# client to server; set-up latency: connect + 1-byte echo + close, $ZT_PEERS_PROBES (default
# 1000) times, p50 and p99 (benches/peers_tool.py against a threaded Python echo origin);
# CPU seconds per GiB of the one-stream run, summed over the path's own processes and their
# children from /proc (ssh + sshd, both rathole ends, socat, zt's edge + connector + client;
# iperf3 itself is not counted), with zt's split by process.
#
# Environment: CARGO_TARGET_DIR (where zt is built), ZT_PEERS_TOOLS (where rathole is
# installed; default /var/tmp/zt-peers-tools), ZT_BIN (use this zt binary instead of
# building one), ZT_PEERS_PATHS (the paths to compare, default all of them; `zt` is always
# among them, the ratios are against it; say "direct zt zt-tcp" for TCP against QUIC
# without installing the peers), ZT_CLOUDFLARED (the cloudflared binary), ZT_PEERS_MTU (pass
# --mtu-upper-bound with this value to every zt process).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tool="$here/peers_tool.py"
mode=full
case "${1:-}" in
--smoke) mode=smoke ;;
"") ;;
*)
    sed -n '2,36p' "$0"
    exit 2
    ;;
esac
seconds=${ZT_PEERS_SECONDS:-5}
zt_flags=()
if [ -n "${ZT_PEERS_MTU:-}" ]; then zt_flags=(--mtu-upper-bound "$ZT_PEERS_MTU"); fi
selected=" ${ZT_PEERS_PATHS:-direct socat rathole rathole-noise ssh zt zt-tcp cfd-quic cfd-http2} zt "
want() { [[ "$selected" == *" $1 "* ]]; }
probes=${ZT_PEERS_PROBES:-1000}
tools=${ZT_PEERS_TOOLS:-/var/tmp/zt-peers-tools}

work=$(mktemp -d "${TMPDIR:-/tmp}/zt-peers.XXXXXX")
pids=()
declare -A pid_of
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

say() { echo "peers: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# A free port on 127.0.0.1 (tcp or udp), asked of the OS.
free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# Starts a background command, logging to $work/<name>.log; remembers its pid.
start() {
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    pid_of[$name]=$!
}

# Waits until a file exists or a log line matches; fails after 60 s.
wait_file() {
    local i
    for i in $(seq 600); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    die "$1 did not appear within 60 s"
}
# Status 0 once the log of the process started as $1 matches $2; 1 when the process ends
# without it or after 60 s.
log_shows() {
    local i
    for i in $(seq 600); do
        grep -q "$2" "$work/$1.log" 2>/dev/null && return 0
        if [ -n "${pid_of[$1]:-}" ] && ! kill -0 "${pid_of[$1]}" 2>/dev/null; then
            grep -q "$2" "$work/$1.log" 2>/dev/null
            return
        fi
        sleep 0.1
    done
    return 1
}
wait_log() {
    log_shows "$1" "$2" && return 0
    cat "$work/$1.log" >&2 || true
    die "$1 did not print '$2' (it ended, or 60 s passed)"
}
wait_port() {
    local i
    for i in $(seq 600); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 60 s"
}

command -v python3 >/dev/null || {
    echo "!!! SKIPPED: python3 is not on PATH: benches/peers.sh needs it"
    exit 0
}

# --- the zt binary -------------------------------------------------------------------------
zt_binary() {
    if [ -n "${ZT_BIN:-}" ]; then
        echo "$ZT_BIN"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$repo/target}
    if [ "$mode" = smoke ]; then
        # CI's test step has built the debug binary already.
        (cd "$repo" && cargo build --locked --bin zt -q) >&2
        echo "$target/debug/zt"
    else
        (cd "$repo" && cargo build --locked --release --bin zt -q) >&2
        echo "$target/release/zt"
    fi
}

# --- origins -------------------------------------------------------------------------------
start echo-origin python3 "$tool" echo-server "$work/echo.port"
wait_file "$work/echo.port"
echo_port=$(cat "$work/echo.port")

# --- zt: edge, tunnel, route, policy, user, connector, client forwards ------------------------
# An edge named $2 with tunnel `peers` (extra `tunnel create` flags after $2), the route to the
# origins, the rules and a user; sets $state, $edge_port, $creds and $device.
start_edge() {
    local zt=$1 name=$2
    shift 2
    state="$work/$name-state"
    creds="$work/$name-creds.json"
    device="$work/$name-device.json"
    local admin_port attempt
    # A port asked of the OS can be taken by another process before the edge binds it
    # (its TCP listener shares the number): try again with new ports, three times.
    for attempt in 1 2 3; do
        edge_port=$(free_port udp)
        admin_port=$(free_port tcp)
        ZT_EDGE_STATE_DIR=$state start "$name" "$zt" edge run --listen "127.0.0.1:$edge_port" \
            --admin "127.0.0.1:$admin_port" "${zt_flags[@]}"
        log_shows "$name" "zt edge is running" && break
        if grep -q "Address already in use" "$work/$name.log" && [ "$attempt" -lt 3 ]; then
            say "$name: port 127.0.0.1:$edge_port or $admin_port was taken meanwhile; new ports"
            continue
        fi
        wait_log "$name" "zt edge is running"
    done
    local a=(--state-dir "$state")
    "$zt" tunnel create peers --credentials-file "$creds" "$@" "${a[@]}" >/dev/null
    "$zt" route ip add 127.0.0.1/32 peers "${a[@]}" >/dev/null
    local list
    list=$("$zt" list create origins --type IP 127.0.0.1/32 --output json "${a[@]}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["reference"])')
    "$zt" rule create allow --precedence 100 --action allow --filter l4 \
        --traffic "net.dst.ip in $list" "${a[@]}" >/dev/null
    "$zt" rule create off --precedence 10000 --action off --filter http \
        --traffic "any(http.conn.dst_ip[*] in $list)" "${a[@]}" >/dev/null
    "$zt" user add peers@example.com --group peers --output-file "$device" "${a[@]}" >/dev/null
}

start_zt() {
    local zt=$1
    start_edge "$zt" edge
    zt_device=$device
    local tunnel_id
    tunnel_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["TunnelID"])' "$creds")
    local metrics
    metrics=$(free_port tcp)
    cat >"$work/connector.yaml" <<EOF
tunnel: $tunnel_id
credentials-file: $creds
metrics: 127.0.0.1:$metrics
edge: 127.0.0.1:$edge_port
cacert: $state/ca.pem
warp-routing:
  enabled: true
EOF
    start connector "$zt" tunnel --config "$work/connector.yaml" run "${zt_flags[@]}"
    local i
    for i in $(seq 600); do
        python3 - "$metrics" <<'EOF' && break
import json, sys, urllib.request
try:
    body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=1).read()
    sys.exit(0 if json.loads(body).get("readyConnections") == 4 else 1)
except Exception:
    sys.exit(1)
EOF
        sleep 0.1
    done
    [ "$i" -lt 600 ] || die "the connector did not report 4 ready connections within 60 s"
}

# zt client forward to 127.0.0.1:$2 (through the edge whose device file is $5, default the
# zt connector's); sets $forward_port. (Not a command substitution: that would run `start`
# in a subshell, and the process would escape the cleanup.)
zt_forward() {
    local zt=$1 to=$2 name=$3 protocol=${4:-quic} dev=${5:-$zt_device}
    forward_port=$(free_port tcp)
    start "$name" "$zt" client --credentials "$dev" --protocol "$protocol" "${zt_flags[@]}" \
        forward --listen "127.0.0.1:$forward_port" --to "127.0.0.1:$to"
    wait_log "$name" "forwarding TCP"
}

# The unmodified cloudflared as the connector of an edge of its own, over protocol $2
# (quic or http2); sets $cfd_device. Needs $cloudflared.
cloudflared=${ZT_CLOUDFLARED:-$repo/../shared/interop/cloudflared-2026.8.2/cloudflared}
start_cloudflared() {
    local zt=$1 protocol=$2
    start_edge "$zt" "edge-cfd-$protocol" --allow-cloudflared
    cfd_device=$device
    local tunnel_id
    tunnel_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["TunnelID"])' "$creds")
    mkdir -p "$work/cfd-home"
    HOME="$work/cfd-home" start "cloudflared-$protocol" "$cloudflared" tunnel --no-autoupdate \
        --edge "127.0.0.1:$edge_port" --cacert "$state/ca.pem" --protocol "$protocol" \
        --metrics 127.0.0.1:0 run --credentials-file "$creds" "$tunnel_id"
    wait_log "cloudflared-$protocol" "Registered tunnel connection.*protocol=$protocol"
}
if { want cfd-quic || want cfd-http2; } && [ ! -x "$cloudflared" ]; then
    echo "!!! SKIPPED: no cloudflared binary at $cloudflared (set ZT_CLOUDFLARED): no cfd-quic and cfd-http2 rows"
    selected=${selected/ cfd-quic / }
    selected=${selected/ cfd-http2 / }
fi

if [ "$mode" = smoke ]; then
    zt=$(zt_binary)
    [ -x "$zt" ] || die "no zt binary at $zt"
    start relay python3 "$tool" relay "$work/relay.port" "$echo_port"
    wait_file "$work/relay.port"
    start_zt "$zt"
    zt_forward "$zt" "$echo_port" zt-echo
    zt_echo=$forward_port
    zt_forward "$zt" "$echo_port" zt-tcp-echo tcp
    zt_tcp_echo=$forward_port
    say "plain relay:"
    python3 "$tool" transfer "$(cat "$work/relay.port")" 16
    say "zt (client forward -> edge -> connector -> origin):"
    python3 "$tool" transfer "$zt_echo" 16
    python3 "$tool" probe "$zt_echo" 20 >/dev/null
    say "zt over TCP (client --protocol tcp):"
    python3 "$tool" transfer "$zt_tcp_echo" 16
    python3 "$tool" probe "$zt_tcp_echo" 20 >/dev/null
    passed=3
    if [ -x "$cloudflared" ]; then
        start_cloudflared "$zt" http2
        zt_forward "$zt" "$echo_port" cfd-http2-echo quic "$cfd_device"
        say "the unmodified cloudflared over HTTP/2 (client forward -> edge -> cloudflared -> origin):"
        python3 "$tool" transfer "$forward_port" 16 no-fin
        python3 "$tool" probe "$forward_port" 20 >/dev/null
        passed=4
    else
        echo "!!! SKIPPED: no cloudflared binary at $cloudflared: the smoke runs without it"
    fi
    echo "peers smoke: $passed passed, 0 failed"
    exit 0
fi

# --- full comparison: install what is missing ---------------------------------------------
need_apt=()
command -v iperf3 >/dev/null || need_apt+=(iperf3)
want socat && { command -v socat >/dev/null || need_apt+=(socat); }
want ssh && { [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server); }
want ssh && { command -v ssh >/dev/null || need_apt+=(openssh-client); }
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing ${need_apt[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >&2
fi
rathole=$(command -v rathole || true)
if [ -z "$rathole" ] && { want rathole || want rathole-noise; }; then
    rathole="$tools/bin/rathole"
    if [ ! -x "$rathole" ]; then
        say "installing rathole from crates.io into $tools"
        CARGO_TARGET_DIR="$tools/target" cargo install rathole --root "$tools" >&2
    fi
fi
zt=$(zt_binary)

# direct: the origins themselves.
start iperf-origin iperf3 -s -B 127.0.0.1 -p "$(free_port tcp | tee "$work/iperf.port")"
iperf_port=$(cat "$work/iperf.port")
wait_port "$iperf_port"

declare -A bulk_port echo_fwd
bulk_port[direct]=$iperf_port
echo_fwd[direct]=$echo_port

# socat
if want socat; then
p1=$(free_port tcp)
p2=$(free_port tcp)
start socat-bulk socat "TCP-LISTEN:$p1,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$iperf_port"
start socat-echo socat "TCP-LISTEN:$p2,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$echo_port"
bulk_port[socat]=$p1
echo_fwd[socat]=$p2
fi

# rathole, plain TCP and Noise transports
if want rathole || want rathole-noise; then
keys=$("$rathole" --genkey)
priv=$(echo "$keys" | sed -n '/Private Key/{n;p}')
pub=$(echo "$keys" | sed -n '/Public Key/{n;p}')
for kind in tcp noise; do
    if [ $kind = tcp ]; then want rathole || continue; else want rathole-noise || continue; fi
    ctrl=$(free_port tcp)
    b=$(free_port tcp)
    e=$(free_port tcp)
    server_t="" client_t=""
    if [ $kind = noise ]; then
        server_t=$'[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "'"$priv"'"'
        client_t=$'[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "'"$pub"'"'
    fi
    cat >"$work/rathole-$kind-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$ctrl"
$server_t
[server.services.bulk]
token = "zt-peers"
bind_addr = "127.0.0.1:$b"
[server.services.echo]
token = "zt-peers"
bind_addr = "127.0.0.1:$e"
EOF
    cat >"$work/rathole-$kind-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$ctrl"
$client_t
[client.services.bulk]
token = "zt-peers"
local_addr = "127.0.0.1:$iperf_port"
[client.services.echo]
token = "zt-peers"
local_addr = "127.0.0.1:$echo_port"
EOF
    start "rathole-$kind-server" "$rathole" --server "$work/rathole-$kind-server.toml"
    wait_port "$ctrl"
    start "rathole-$kind-client" "$rathole" --client "$work/rathole-$kind-client.toml"
    name=rathole
    [ $kind = noise ] && name=rathole-noise
    bulk_port[$name]=$b
    echo_fwd[$name]=$e
done
fi

# ssh -L through sshd on loopback, key authentication, the default cipher.
if want ssh; then
sshd_port=$(free_port tcp)
ssh-keygen -q -t ed25519 -N "" -f "$work/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd
cat >"$work/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $sshd_port
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
PidFile $work/sshd.pid
EOF
start sshd /usr/sbin/sshd -D -e -f "$work/sshd_config"
wait_port "$sshd_port"
b=$(free_port tcp)
e=$(free_port tcp)
start ssh ssh -N -i "$work/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ExitOnForwardFailure=yes -p "$sshd_port" \
    -L "127.0.0.1:$b:127.0.0.1:$iperf_port" -L "127.0.0.1:$e:127.0.0.1:$echo_port" \
    "$(id -un)@127.0.0.1"
bulk_port[ssh]=$b
echo_fwd[ssh]=$e
fi

# zt
start_zt "$zt"
zt_forward "$zt" "$iperf_port" zt-bulk
bulk_port[zt]=$forward_port
zt_forward "$zt" "$echo_port" zt-echo
echo_fwd[zt]=$forward_port
if want zt-tcp; then
    zt_forward "$zt" "$iperf_port" zt-tcp-bulk tcp
    bulk_port[zt-tcp]=$forward_port
    zt_forward "$zt" "$echo_port" zt-tcp-echo tcp
    echo_fwd[zt-tcp]=$forward_port
fi
for protocol in quic http2; do
    want "cfd-$protocol" || continue
    start_cloudflared "$zt" "$protocol"
    zt_forward "$zt" "$iperf_port" "cfd-$protocol-bulk" quic "$cfd_device"
    bulk_port[cfd-$protocol]=$forward_port
    zt_forward "$zt" "$echo_port" "cfd-$protocol-echo" quic "$cfd_device"
    echo_fwd[cfd-$protocol]=$forward_port
done

paths=()
for p in direct socat rathole rathole-noise ssh zt zt-tcp cfd-quic cfd-http2; do
    want "$p" && paths+=("$p")
done
for p in "${paths[@]}"; do
    wait_port "${bulk_port[$p]}"
    wait_port "${echo_fwd[$p]}"
    fin=""
    [[ $p == cfd-* ]] && fin=no-fin # cloudflared ends a flow at the first FIN
    python3 "$tool" transfer "${echo_fwd[$p]}" 4 $fin >/dev/null || die "$p does not carry data intact"
done

# iperf3 Gbit/s received, from its JSON; the GiB received go to $work/iperf.gib.
iperf() {
    local port=$1 streams=$2
    # A run that has not ended a minute after its time is a stalled path, not a slow one.
    timeout $((seconds + 60)) iperf3 -c 127.0.0.1 -p "$port" -t "$seconds" -P "$streams" -J \
        >"$work/iperf.json" ||
        die "iperf3 -P $streams through port $port failed or did not end within $((seconds + 60)) s: $(head -c 600 "$work/iperf.json")"
    python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["end"]["sum_received"]
open(sys.argv[2], "w").write("%.6f" % (r["bytes"] / 2**30))
print("%.2f" % (r["bits_per_second"] / 1e9))' "$work/iperf.json" "$work/iperf.gib"
}

# The processes each path runs (the bulk forward's, for zt), by their `start` names.
declare -A procs=(
    [socat]="socat-bulk"
    [rathole]="rathole-tcp-server rathole-tcp-client"
    [rathole-noise]="rathole-noise-server rathole-noise-client"
    [ssh]="sshd ssh"
    [zt]="edge connector zt-bulk"
    [zt-tcp]="edge connector zt-tcp-bulk"
    [cfd-quic]="edge-cfd-quic cloudflared-quic cfd-quic-bulk"
    [cfd-http2]="edge-cfd-http2 cloudflared-http2 cfd-http2-bulk"
)
# CPU seconds of each named process's tree, one figure per name.
cpu_of() {
    local n ps=()
    for n in "$@"; do ps+=("${pid_of[$n]}"); done
    python3 "$tool" cpu "${ps[@]}"
}
# CPU s/GiB of the last run from the trees' CPU before ($2) and after ($3), names in $1:
# prints the sum, then each process's share.
cpu_per_gib() {
    python3 -c 'import sys
gib = float(open(sys.argv[1]).read())
names, b, a = sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
each = [(float(y) - float(x)) / gib for x, y in zip(b, a)]
print("%.2f" % sum(each), ", ".join("%s %.2f" % (n, c) for n, c in zip(names, each)))' \
        "$work/iperf.gib" "$1" "$2" "$3"
}

declare -A one eight p50 p99 cpu
zt_split=""
for p in "${paths[@]}"; do
    say "$p: 1 flow"
    read -r -a names <<<"${procs[$p]:-}"
    cpu[$p]=-
    if [ ${#names[@]} -gt 0 ]; then
        before=$(cpu_of "${names[@]}")
        one[$p]=$(iperf "${bulk_port[$p]}" 1)
        after=$(cpu_of "${names[@]}")
        read -r total split < <(cpu_per_gib "${names[*]}" "$before" "$after")
        cpu[$p]=$total
        if [ "$p" = zt ]; then zt_split=$split; fi
    else
        one[$p]=$(iperf "${bulk_port[$p]}" 1)
    fi
    say "$p: 8 flows"
    eight[$p]=$(iperf "${bulk_port[$p]}" 8)
    say "$p: set-up probe"
    read -r p50[$p] p99[$p] < <(python3 "$tool" probe "${echo_fwd[$p]}" "$probes")
done

ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print("%.2f" % (a/b) if b else "-")' "$1" "$2"; }
echo
echo "zt peers comparison, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "iperf3 -t $seconds; set-up = connect + 1-byte echo + close, $probes samples"
echo
printf '| %-13s | %13s | %14s | %14s | %10s | %10s | %12s | %12s | %13s | %11s |\n' path "1 flow Gbit/s" "8 flows Gbit/s" "zt/this 1 flow" "zt/this 8" "set-up p50" "set-up p99" "p99 this/zt" "CPU s/GiB (1)" "CPU zt/this"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' --------------- --------------- ---------------- ---------------- ------------ ------------ -------------- -------------- --------------- -------------
for p in "${paths[@]}"; do
    cr=-
    if [ "${cpu[$p]}" != - ]; then cr=$(ratio "${cpu[zt]}" "${cpu[$p]}"); fi
    printf '| %-13s | %13s | %14s | %14s | %10s | %7s µs | %7s µs | %12s | %13s | %11s |\n' "$p" "${one[$p]}" "${eight[$p]}" \
        "$(ratio "${one[zt]}" "${one[$p]}")" "$(ratio "${eight[zt]}" "${eight[$p]}")" \
        "${p50[$p]}" "${p99[$p]}" "$(ratio "${p99[$p]}" "${p99[zt]}")" "${cpu[$p]}" "$cr"
done
echo
echo "zt CPU s/GiB by process (1 flow): $zt_split"
if [ -n "${ZT_PEERS_MTU:-}" ]; then echo "zt processes ran with --mtu-upper-bound $ZT_PEERS_MTU"; fi
