#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark of issue 6.
#
# Builds Caddy with sse_fanout (cmd/caddy), the bench origin (cmd/sseorigin)
# and the load tool (cmd/sseload) into $BIN, then, for each workload, runs
# every system in turn, interleaved round by round (A B A B …) so that drift
# of the machine hits all of them, and prints a markdown table of the
# medians with the ratios of the first system to the second.
#
#   bench/run.sh                               # make bench
#   SYSTEMS="sse_fanout nchan" bench/run.sh    # make bench-peers
#   ROUNDS=1 DURATION=3s SCALE=10 bench/run.sh # a smoke run, a tenth of the clients
#
# Workloads (clients, events per second, bytes per event):
#   W1  1,000 clients, 10 ev/s, 256 B
#   W2 10,000 clients,  1 ev/s, 256 B
#   W3  1,000 clients, 100 ev/s, 64 B
#   W4 10,000 clients, idle (no events): memory per client
#
# Systems:
#   sse_fanout     Caddy + sse_fanout in front of sseorigin
#   reverse_proxy  Caddy + reverse_proxy (flush_interval -1) in front of sseorigin
#   direct         the clients on sseorigin itself (Go net/http, no proxy)
#   nchan          nginx + nchan, fed by sseorigin -publish over HTTP POST
#                  (needs: apt-get install nginx libnginx-mod-nchan)
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [20s]  WARMUP [2s]  RAMP [2000 connections/s]
#   WORKLOADS ["W1 W2 W3 W4"]  SYSTEMS ["sse_fanout reverse_proxy"]
#   SCALE [1]: divide every workload's clients by this
#   BIN [/tmp]: where the binaries go   OUT [a new /tmp/ssebench.*]: results
#   PORT_BASE [19100]: the origin listens on it, the server on PORT_BASE+80
#   NGINX_WORKERS [auto]
#   FANOUT_OPTIONS [none]: one subdirective for sse_fanout, e.g. "detach off"
#   ADMIN [off]: Caddy's admin address, e.g. 127.0.0.1:2999, to take a
#                profile from /debug/pprof/ during a run
#
# Everything listens on 127.0.0.1. Every process this script starts is
# stopped by its pid, also when the script is interrupted.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-2s}
RAMP=${RAMP:-2000}
WORKLOADS=${WORKLOADS:-"W1 W2 W3 W4"}
SYSTEMS=${SYSTEMS:-"sse_fanout reverse_proxy"}
SCALE=${SCALE:-1}
BIN=${BIN:-/tmp}
PORT_BASE=${PORT_BASE:-19100}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
OUT=${OUT:-$(mktemp -d /tmp/ssebench.XXXXXX)}
mkdir -p "$OUT"

ORIGIN_PORT=$PORT_BASE
SERVER_PORT=$((PORT_BASE + 80))

# --- processes ---------------------------------------------------------

started=() # pids of every process started and not yet stopped

stop_pid() {
	local pid=$1
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	local kept=()
	for p in "${started[@]}"; do
		[[ $p == "$pid" ]] || kept+=("$p")
	done
	started=("${kept[@]+"${kept[@]}"}")
}

cleanup() {
	local pid
	for pid in "${started[@]+"${started[@]}"}"; do
		stop_pid "$pid"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port waits until something accepts connections on 127.0.0.1:$1.
wait_port() {
	local port=$1
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "nothing listens on 127.0.0.1:$port after 10 s" >&2
	return 1
}

# port_free fails if something already listens on 127.0.0.1:$1.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "127.0.0.1:$1 is in use; set PORT_BASE to another port" >&2
		return 1
	fi
}

start_origin() { # rate size
	port_free "$ORIGIN_PORT"
	"$BIN/sseorigin" -listen "127.0.0.1:$ORIGIN_PORT" -rate "$1" -size "$2" >>"$OUT/origin.log" 2>&1 &
	origin_pid=$!
	started+=("$origin_pid")
	wait_port "$ORIGIN_PORT"
}

start_publisher() { # rate size
	"$BIN/sseorigin" -publish "http://127.0.0.1:$SERVER_PORT/pub" -rate "$1" -size "$2" >>"$OUT/publisher.log" 2>&1 &
	publisher_pid=$!
	started+=("$publisher_pid")
}

start_caddy() { # system
	port_free "$SERVER_PORT"
	local conf="$OUT/Caddyfile.$1"
	{
		cat <<-EOF
			{
				admin ${ADMIN:-off}
				persist_config off
				auto_https off
			}

			http://127.0.0.1:$SERVER_PORT {
		EOF
		case $1 in
		sse_fanout)
			if [[ -n ${FANOUT_OPTIONS:-} ]]; then
				echo "	sse_fanout http://127.0.0.1:$ORIGIN_PORT {"
				echo "		$FANOUT_OPTIONS"
				echo "	}"
			else
				echo "	sse_fanout http://127.0.0.1:$ORIGIN_PORT"
			fi
			;;
		reverse_proxy)
			echo "	reverse_proxy 127.0.0.1:$ORIGIN_PORT {"
			echo "		flush_interval -1"
			echo "	}"
			;;
		esac
		echo "}"
	} >"$conf"
	XDG_DATA_HOME="$OUT/xdg" XDG_CONFIG_HOME="$OUT/xdg" \
		"$BIN/caddy" run --config "$conf" --adapter caddyfile >>"$OUT/caddy.$1.log" 2>&1 &
	server_pid=$!
	started+=("$server_pid")
	wait_port "$SERVER_PORT"
	server_pids="server=$server_pid"
}

start_nginx() {
	port_free "$SERVER_PORT"
	local module=/usr/lib/nginx/modules/ngx_nchan_module.so
	mkdir -p "$OUT/nginx/logs" "$OUT/nginx/tmp"
	cat >"$OUT/nginx/nginx.conf" <<-EOF
		load_module $module;
		daemon off;
		user root;
		worker_processes $NGINX_WORKERS;
		worker_rlimit_nofile 20000;
		pid $OUT/nginx/nginx.pid;
		error_log $OUT/nginx/logs/error.log warn;
		events {
			worker_connections 20000;
			multi_accept on;
		}
		http {
			access_log off;
			client_body_temp_path $OUT/nginx/tmp/body;
			proxy_temp_path $OUT/nginx/tmp/proxy;
			fastcgi_temp_path $OUT/nginx/tmp/fastcgi;
			uwsgi_temp_path $OUT/nginx/tmp/uwsgi;
			scgi_temp_path $OUT/nginx/tmp/scgi;
			server {
				listen 127.0.0.1:$SERVER_PORT backlog=4096;
				location = /pub {
					nchan_publisher http;
					nchan_channel_id bench;
					nchan_message_buffer_length 1024;
					nchan_message_timeout 60s;
				}
				location /events {
					nchan_subscriber eventsource;
					nchan_channel_id bench;
					nchan_subscriber_first_message newest;
				}
			}
		}
	EOF
	nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" >>"$OUT/nginx/logs/stdout.log" 2>&1 &
	server_pid=$!
	started+=("$server_pid")
	wait_port "$SERVER_PORT"
	sleep 0.2 # let the workers start
	server_pids="server=$server_pid"
	local w
	for w in $(pgrep -P "$server_pid"); do
		server_pids+=",server=$w"
	done
}

# --- workloads ---------------------------------------------------------

workload() { # name -> clients rate size
	case $1 in
	W1) echo 1000 10 256 ;;
	W2) echo 10000 1 256 ;;
	W3) echo 1000 100 64 ;;
	W4) echo 10000 0 256 ;;
	*)
		echo "unknown workload $1" >&2
		return 1
		;;
	esac
}

run_one() { # workload system round
	local wl=$1 sys=$2 round=$3 clients rate size url pids stats result
	read -r clients rate size < <(workload "$wl")
	clients=$((clients / SCALE))
	result="$OUT/$wl.$sys.$round.json"
	stats="http://127.0.0.1:$ORIGIN_PORT/stats"
	case $sys in
	sse_fanout | reverse_proxy)
		start_origin "$rate" "$size"
		start_caddy "$sys"
		url="http://127.0.0.1:$SERVER_PORT/events"
		pids="$server_pids,origin=$origin_pid"
		;;
	direct)
		start_origin "$rate" "$size"
		url="http://127.0.0.1:$ORIGIN_PORT/events"
		pids="server=$origin_pid"
		;;
	nchan)
		start_nginx
		url="http://127.0.0.1:$SERVER_PORT/events"
		pids="$server_pids"
		stats=""
		if [[ $rate != 0 ]]; then
			start_publisher "$rate" "$size"
			pids+=",publisher=$publisher_pid"
		fi
		;;
	*)
		echo "unknown system $sys" >&2
		return 1
		;;
	esac

	# In the background, so that a signal to this script is handled at once
	# rather than after the run.
	"$BIN/sseload" -url "$url" -clients "$clients" -ramp "$RAMP" \
		-duration "$DURATION" -warmup "$WARMUP" -pid "$pids" \
		${stats:+-origin-stats "$stats"} \
		-workload "$wl" -system "$sys" -round "$round" -json >"$result" 2>>"$OUT/sseload.log" &
	local load_pid=$!
	started+=("$load_pid")
	if ! wait "$load_pid"; then
		echo "sseload failed for $wl $sys round $round (see $OUT/sseload.log)" >&2
	fi
	"$BIN/sseload" -table "$result" | sed -n 3p

	for pid in "${started[@]+"${started[@]}"}"; do
		stop_pid "$pid"
	done
	sleep 1 # let the closed connections drain
}

# --- main --------------------------------------------------------------

echo "--- building into $BIN"
go build -o "$BIN/caddy" ./cmd/caddy
go build -o "$BIN/sseorigin" ./cmd/sseorigin
go build -o "$BIN/sseload" ./cmd/sseload
if [[ " $SYSTEMS " == *" nchan "* ]] && [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
	echo "nchan is not installed: apt-get install nginx libnginx-mod-nchan" >&2
	exit 1
fi

echo "--- results in $OUT"
echo "| workload | system | clients held | p50 latency | p99 latency | max | server CPU s per 1M deliveries | RSS per client | origin connections | lost events |"
for wl in $WORKLOADS; do
	for round in $(seq "$ROUNDS"); do
		for sys in $SYSTEMS; do
			run_one "$wl" "$sys" "$round"
		done
	done
done

{
	echo
	echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB," \
		"$(uname -sr), $(go version | cut -d' ' -f3), load generator on the same machine, loopback."
	dirty=$(git status --short --untracked-files=no -- '*.go' go.mod | awk '{print $2}' | tr '\n' ' ')
	echo "Code: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+ with uncommitted changes to: $dirty}"
	echo "Command: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP RAMP=$RAMP SCALE=$SCALE" \
		"WORKLOADS=\"$WORKLOADS\" SYSTEMS=\"$SYSTEMS\" bench/run.sh"
	echo
	"$BIN/sseload" -table -order "$SYSTEMS" "$OUT"/*.json
} | tee "$OUT/table.md"
