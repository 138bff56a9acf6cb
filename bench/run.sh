#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark of issues 6 and 12.
#
# Builds Caddy with sse_fanout (cmd/caddy), Caddy with the minimal sse_floor
# handler (bench/caddyfloor), the bench origin (bench/sseorigin) and the load
# tool (bench/sseload) into $BIN, then, for each workload, runs
# every system in turn, interleaved round by round (A B A B …) so that drift
# of the machine hits all of them, and prints a markdown table of the
# medians with the ratios of the first system to the second.
#
#   bench/run.sh                               # make bench
#   SYSTEMS="sse_fanout nchan" bench/run.sh    # make bench-peers
#   ROUNDS=1 DURATION=3s SCALE=10 bench/run.sh # a smoke run, a tenth of the clients
#   SYSTEMS=fleet EDGES=5 SSELOAD_PROCS=6 SOURCE_ADDRS=127.0.0.1-127.0.0.8 \
#       CLIENTS="1000 10000 20000 100000" WORKLOADS="W2 W4" bench/run.sh
#                                              # the fleet on one machine (issue 23)
#   ENDURANCE=1h bench/run.sh                  # the endurance run (bench/sseendure)
#   PROTO=h2 SYSTEMS="sse_fanout nchan direct caddyfloor" bench/run.sh
#   WORKLOADS=M1 SYSTEMS="sse_fanout_mux nchan_mux sse_fanout_each nchan_each" \
#       PROTO=h2 bench/run.sh                  # pages of ten streams (issue 22)
#
# Workloads (clients, events per second, bytes per event):
#   W1  1,000 clients, 10 ev/s, 256 B
#   W2 10,000 clients,  1 ev/s, 256 B
#   W3  1,000 clients, 100 ev/s, 64 B
#   W4 10,000 clients, idle (no events): memory per client
#   M1  1,000 pages of 10 members, each member 1 ev/s, 256 B: a page is one
#       client, which reads ten streams (s0 … s9, served by sseorigin
#       -streams 10, their events spread over each second); SCALE and
#       CLIENTS count pages, a delivery is one member's event reaching a
#       page (10 a second per page), lost events are counted per member,
#       and RSS per client is per page (sseload -members). Only the page
#       systems below run it, and they run only it.
#
# Systems:
#   sse_fanout     Caddy + sse_fanout in front of sseorigin
#   reverse_proxy  Caddy + reverse_proxy (flush_interval -1) in front of sseorigin
#   direct         the clients on sseorigin itself (Go net/http, no proxy):
#                  Go's own floor
#   caddyfloor     Caddy with sse_floor, which serves the same events with
#                  the same code as direct, from an in-process clock: the
#                  floor of Caddy's request path, with none of sse_fanout
#   fleet          a shield and EDGES edges, each a Caddy + sse_fanout process
#                  of its own under a 20,000 file limit (ulimit -n): the
#                  shield reads sseorigin, the edges read the shield, and the
#                  clients are spread over the edges in turn; PROTO=h1 only
#   nchan          nginx + nchan, fed by sseorigin -publish over HTTP POST
#                  (needs: apt-get install nginx libnginx-mod-nchan)
#   sse_fanout_gzip, sse_fanout_zstd
#                  sse_fanout with "compress gzip" (or zstd), each event
#                  compressed once per stream; the clients accept that
#                  encoding
#   encode_gzip, encode_zstd
#                  Caddy's "encode gzip" (or zstd) in front of sse_fanout:
#                  a compressor per client; the clients accept that encoding
# Systems for pages (M1), each on the same ten streams at the same rates:
#   sse_fanout_mux   Caddy + sse_fanout with multiplex_param: a page is one
#                    EventSource, /events/?streams=s0,s1,…,s9, whose members
#                    are the streams /events/s0 … /events/s9 of sseorigin
#                    (multiplex_members /events/*; events renamed sN)
#   sse_fanout_each  Caddy + sse_fanout, ten EventSources per page, one per
#                    member, /events/s0 … /events/s9: ten connections per
#                    page over HTTP/1.1 (more than the six a browser would
#                    open), ten streams on the page's one connection over h2
#                    and h3 (STREAMS_PER_CONN pages share it)
#   nchan_mux        nginx + nchan's multiplexed subscriber: a page is one
#                    EventSource on the ten channels s0 … s9, the same URL
#                    as sse_fanout_mux (nchan_channel_id $arg_streams with
#                    nchan_channel_id_split_delimiter ","), fed by
#                    sseorigin -streams 10 -publish posting each stream's
#                    events to its channel, /pub/sN
#   nchan_each       nginx + nchan, ten EventSources per page, /events/sN,
#                    one per channel, as sse_fanout_each
# The table's rows say how a page reads: "page: 1 stream of 10" or "page: 10
# streams"; its clients held are pages, with their deliveries per second.
#   WORKLOADS=M1 SYSTEMS="sse_fanout_mux nchan_mux sse_fanout_each nchan_each" bench/run.sh
# compares them; the ratio rows compare the first with each other one.
# Compare them on a realistic payload, e.g.
#   PAYLOAD=json WORKLOADS="W1 W2" SYSTEMS="sse_fanout_gzip sse_fanout encode_gzip sse_fanout_zstd" bench/run.sh
# the table's "bytes per event" is what came over the wire per event.
#
# Protocols (PROTO), between the clients and the system; the origin behind
# sse_fanout and reverse_proxy is plain HTTP/1.1 on loopback in every case:
#   h1     plain HTTP/1.1
#   h1tls  HTTP/1.1 over TLS: Caddy "protocols h1", nginx "listen … ssl",
#          and the clients offer only http/1.1 in ALPN
#   h2     HTTP/2 over TLS: Caddy "protocols h1 h2", nginx "listen … ssl
#          http2"; sseload checks that every connection negotiated h2
#   h3     HTTP/3: Caddy "protocols h1 h2 h3", sseorigin -h3; nchan is
#          skipped (Debian's nginx 1.22 has no HTTP/3)
# TLS uses a self-signed ECDSA P-256 certificate for 127.0.0.1 that the
# script makes with openssl, in $OUT/tls; every connection makes a full
# handshake.
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [20s]  WARMUP [2s]  RAMP [2000 connections/s]
#   WORKLOADS ["W1 W2 W3 W4"]  SYSTEMS ["sse_fanout reverse_proxy"]
#   SCALE [1]: divide every workload's clients by this
#   BIN [/tmp]: where the binaries go   OUT [a new /tmp/ssebench.*]: results
#   PORT_BASE [19100]: the origin listens on it, the server on PORT_BASE+80
#                (and on UDP for h3), nchan's publisher port on PORT_BASE+81
#   NGINX_WORKERS [auto]
#   PROTO [h1]: h1, h1tls, h2 or h3 (above)
#   STREAMS_PER_CONN [1]: for h2 and h3, the event streams sharing each
#                connection, as a browser's tabs do (the clients are
#                streams: 1000 clients at 10 make 100 connections). At most
#                100, the fewest concurrent streams the servers allow. For
#                M1 it counts pages: the *_each systems put ten streams per
#                page on a connection, so at most 10 there
#   FANOUT_OPTIONS [none]: one subdirective for sse_fanout, e.g. "detach off"
#   CADDY_SERVER_OPTIONS [none]: lines for Caddy's global servers block, for
#                every Caddy system, e.g. $'timeouts {\nwrite_idle -1s\n}'
#   ADMIN [off]: Caddy's admin address, e.g. 127.0.0.1:2999, to take a
#                profile from /debug/pprof/ during a run
#   PAYLOAD [padding]: what fills each event after its stamp: padding
#                (x…) or json, a JSON document of an order update, about
#                SIZE bytes, as an application would send (sseorigin
#                -payload); with json, SIZE defaults to 1024
#   SIZE [the workload's]: bytes per event, for every workload (not
#                caddyfloor's, which makes its own events)
#   FLOOR_QUEUE [1024]: the events each client of direct and caddyfloor may
#                fall behind (sseorigin -queue, sse_floor queue): a channel
#                of that many 16-byte slots per client, which their memory
#                per client includes; 16 makes them tighter memory floors
#   CLIENTS [none]: run each workload at each of these numbers of clients
#                (before SCALE) instead of its own, labelled W2@20000 and so
#                on: the curve of the charts
#   SSELOAD_PROCS [1]: sseload processes side by side, each with its share
#                of the clients (at most 19,000 each, under the file limit);
#                the first measures the processes, and their reports are
#                merged (sseload -merge) into one
#   SOURCE_ADDRS [none]: loopback addresses the clients connect from, in
#                turn, such as 127.0.0.1-127.0.0.8 (sseload -source-addrs);
#                with SSELOAD_PROCS each process takes all of them
#   EDGES [2]: the fleet's edges, on PORT_BASE+80 … +80+EDGES-1; the shield
#                listens on PORT_BASE+79
#   KILL_EDGE_AT [none]: with fleet, kill -9 the first edge this long after
#                the clients start connecting (a bash sleep duration, such
#                as 30); the clients reconnect with their cursor to the
#                next edge (sseload -reconnect), and the report's resume
#                line says how long until all were back, and what they lost
#   CONNECT_TIMEOUT [60s]: how long after its ramp sseload waits for its
#                clients to connect before it measures with those it has
#                (sseload -connect-timeout)
#   PROGRESS [none]: sseload -progress, such as 10s, into $OUT/sseload.log
#   ENDURANCE [none]: instead of the workloads, the endurance run of that
#                length (such as 1h) with bench/sseendure, its results and
#                charts in $OUT; ENDURANCE_ARGS passes it more flags (see
#                go doc ./bench/sseendure)
#   ACCEPT_ENCODING [none]: the clients' Accept-Encoding (sseload
#                -accept-encoding), for the systems that do not set their
#                own (sse_fanout_*, encode_*), e.g. to see what sse_fanout
#                with FANOUT_OPTIONS="compress zstd gzip" sends to gzip clients
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
FLOOR_QUEUE_SET=${FLOOR_QUEUE:-}
FLOOR_QUEUE=${FLOOR_QUEUE:-1024}
PROTO=${PROTO:-h1}
STREAMS_PER_CONN=${STREAMS_PER_CONN:-1}
PAYLOAD=${PAYLOAD:-padding}
SIZE=${SIZE:-}
ACCEPT_ENCODING=${ACCEPT_ENCODING:-}
CLIENTS=${CLIENTS:-}
SSELOAD_PROCS=${SSELOAD_PROCS:-1}
SOURCE_ADDRS=${SOURCE_ADDRS:-}
EDGES=${EDGES:-2}
KILL_EDGE_AT=${KILL_EDGE_AT:-}
PROGRESS=${PROGRESS:-}
ENDURANCE=${ENDURANCE:-}
OUT=${OUT:-$(mktemp -d /tmp/ssebench.XXXXXX)}
mkdir -p "$OUT"

MEMBERS=10 # a page's streams in M1: s0 … s9
MEMBER_NAMES=$(seq -s, -f 's%g' 0 $((MEMBERS - 1)))

ORIGIN_PORT=$PORT_BASE
SERVER_PORT=$((PORT_BASE + 80))
PUB_PORT=$((PORT_BASE + 81)) # nchan's publisher, plain HTTP, when clients use TLS

case $PROTO in
h1) SCHEME=http ;;
h1tls | h2 | h3) SCHEME=https ;;
*)
	echo "PROTO must be h1, h1tls, h2 or h3, not $PROTO" >&2
	exit 2
	;;
esac
if [[ $PAYLOAD != padding && $PAYLOAD != json ]]; then
	echo "PAYLOAD must be padding or json, not $PAYLOAD" >&2
	exit 2
fi
if [[ $STREAMS_PER_CONN != 1 && $PROTO != h2 && $PROTO != h3 ]]; then
	echo "STREAMS_PER_CONN needs PROTO=h2 or h3: HTTP/1.1 carries one stream per connection" >&2
	exit 2
fi
if ((STREAMS_PER_CONN < 1 || STREAMS_PER_CONN > 100)); then
	echo "STREAMS_PER_CONN must be 1 to 100: quic-go's servers allow 100 concurrent streams, nginx 128" >&2
	exit 2
fi
if [[ " $SYSTEMS " == *" fleet "* && $PROTO != h1 ]]; then
	echo "the fleet system is PROTO=h1 only" >&2
	exit 2
fi
if ((SSELOAD_PROCS < 1 || EDGES < 1)); then
	echo "SSELOAD_PROCS and EDGES must be at least 1" >&2
	exit 2
fi
if [[ " $SYSTEMS " == *_each" "* ]] && ((STREAMS_PER_CONN * MEMBERS > 100)); then
	echo "STREAMS_PER_CONN counts pages for M1: the *_each systems put $MEMBERS streams per page on a connection, at most 100" >&2
	exit 2
fi
if [[ $PROTO == h3 && " $SYSTEMS " == *" nchan"* ]]; then
	echo "nchan skipped: Debian's nginx 1.22 cannot serve HTTP/3 (PROTO=h3)" >&2
	kept=""
	for sys in $SYSTEMS; do
		[[ $sys == nchan* ]] || kept+="${kept:+ }$sys"
	done
	SYSTEMS=$kept
	if [[ -z $SYSTEMS ]]; then
		echo "no system left to run" >&2
		exit 2
	fi
fi

# Caddy's protocols for the clients' side.
case $PROTO in
h1tls) CADDY_PROTOCOLS="h1" ;;
h2) CADDY_PROTOCOLS="h1 h2" ;;
h3) CADDY_PROTOCOLS="h1 h2 h3" ;;
esac

CERT="$OUT/tls/cert.pem"
KEY="$OUT/tls/key.pem"

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

# wait_log waits until file $1 has a line matching $2 after its first $3
# lines: a process's message that it is ready.
wait_log() {
	local file=$1 pattern=$2 skip=$3
	for _ in $(seq 200); do
		if tail -n "+$((skip + 1))" "$file" 2>/dev/null | grep -q "$pattern"; then
			return 0
		fi
		sleep 0.05
	done
	echo "no \"$pattern\" in $file after 10 s" >&2
	return 1
}

# lines counts the lines of file $1, 0 if there is none.
lines() {
	if [[ -e $1 ]]; then
		wc -l <"$1"
	else
		echo 0
	fi
}

# make_cert makes the self-signed certificate for 127.0.0.1, once.
make_cert() {
	[[ -e $CERT ]] && return 0
	mkdir -p "$OUT/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$KEY" -out "$CERT" -days 7 -subj "/CN=127.0.0.1" \
		-addext "subjectAltName=IP:127.0.0.1" >>"$OUT/openssl.log" 2>&1
}

start_origin() { # rate size [direct] [streams]: with direct, it serves the clients, in their protocol, with FLOOR_QUEUE; streams (M1's members) of rate each
	port_free "$ORIGIN_PORT"
	local extra=()
	((${4:-0} > 1)) && extra+=(-streams "$4")
	if [[ ${3:-} == direct ]]; then
		extra+=(-queue "$FLOOR_QUEUE")
		if [[ $PROTO != h1 ]]; then
			extra+=(-tls-cert "$CERT" -tls-key "$KEY")
			[[ $PROTO == h3 ]] && extra+=(-h3) # its UDP socket is bound before TCP
		fi
	fi
	"$BIN/sseorigin" -listen "127.0.0.1:$ORIGIN_PORT" -rate "$1" -size "$2" -payload "$PAYLOAD" "${extra[@]}" >>"$OUT/origin.log" 2>&1 &
	origin_pid=$!
	started+=("$origin_pid")
	wait_port "$ORIGIN_PORT"
}

start_publisher() { # rate size [streams]: streams (M1's members) of rate each, to the channels s0 …
	local port=$SERVER_PORT streams=${3:-0} path=/pub
	[[ $PROTO != h1 ]] && port=$PUB_PORT
	((streams > 1)) && path="/pub/{stream}" || streams=1
	"$BIN/sseorigin" -publish "http://127.0.0.1:$port$path" -streams "$streams" -rate "$1" -size "$2" -payload "$PAYLOAD" >>"$OUT/publisher.log" 2>&1 &
	publisher_pid=$!
	started+=("$publisher_pid")
}

# fanout_directive writes the sse_fanout directive, with the subdirective
# $1 if given, and FANOUT_OPTIONS.
fanout_directive() {
	if [[ -z ${1:-} && -z ${FANOUT_OPTIONS:-} ]]; then
		echo "	sse_fanout http://127.0.0.1:$ORIGIN_PORT"
		return
	fi
	echo "	sse_fanout http://127.0.0.1:$ORIGIN_PORT {"
	[[ -n ${1:-} ]] && echo "		$1"
	[[ -n ${FANOUT_OPTIONS:-} ]] && echo "		$FANOUT_OPTIONS"
	echo "	}"
}

start_caddy() { # system rate size
	port_free "$SERVER_PORT"
	local conf="$OUT/Caddyfile.$1" bin="$BIN/caddy" log="$OUT/caddy.$1.log" skip
	[[ $1 == caddyfloor ]] && bin="$BIN/caddyfloor"
	{
		echo "{"
		echo "	admin ${ADMIN:-off}"
		echo "	persist_config off"
		echo "	auto_https off"
		if [[ $PROTO != h1 || -n ${CADDY_SERVER_OPTIONS:-} ]]; then
			echo "	servers {"
			if [[ $PROTO != h1 ]]; then
				echo "		protocols $CADDY_PROTOCOLS"
			fi
			if [[ -n ${CADDY_SERVER_OPTIONS:-} ]]; then
				echo "$CADDY_SERVER_OPTIONS"
			fi
			echo "	}"
		fi
		echo "}"
		echo
		echo "$SCHEME://127.0.0.1:$SERVER_PORT {"
		if [[ $PROTO != h1 ]]; then
			echo "	tls $CERT $KEY"
		fi
		case $1 in
		sse_fanout | sse_fanout_each)
			fanout_directive
			;;
		sse_fanout_mux)
			fanout_directive $'multiplex_param streams\n\t\tmultiplex_members /events/*'
			;;
		sse_fanout_gzip | sse_fanout_zstd)
			fanout_directive "compress ${1#sse_fanout_}"
			;;
		encode_gzip | encode_zstd)
			echo "	encode ${1#encode_}"
			fanout_directive
			;;
		reverse_proxy)
			echo "	reverse_proxy 127.0.0.1:$ORIGIN_PORT {"
			echo "		flush_interval -1"
			echo "	}"
			;;
		caddyfloor)
			echo "	sse_floor {"
			echo "		rate $2"
			echo "		size $3"
			echo "		queue $FLOOR_QUEUE"
			echo "	}"
			;;
		esac
		echo "}"
	} >"$conf"
	skip=$(lines "$log")
	XDG_DATA_HOME="$OUT/xdg" XDG_CONFIG_HOME="$OUT/xdg" \
		"$bin" run --config "$conf" --adapter caddyfile >>"$log" 2>&1 &
	server_pid=$!
	started+=("$server_pid")
	wait_port "$SERVER_PORT"
	# Caddy opens its UDP socket for HTTP/3 after the TCP listener, and
	# says "server running" once both are.
	[[ $PROTO == h3 ]] && wait_log "$log" '"server running"' "$skip"
	server_pids="server=$server_pid"
}

# start_fleet starts the shield on SERVER_PORT-1, reading the origin, and
# EDGES edges on SERVER_PORT…, reading the shield: each a Caddy process
# under a 20,000 file limit, as on a machine whose processes may not hold
# more. It sets edge_pids (in order), fleet_urls and server_pids.
start_fleet() {
	local shield_port=$((SERVER_PORT - 1)) i port conf pid
	port_free "$shield_port"
	conf="$OUT/Caddyfile.shield"
	{
		echo "{"
		echo "	admin off"
		echo "	persist_config off"
		echo "	auto_https off"
		echo "}"
		echo "http://127.0.0.1:$shield_port {"
		echo "	sse_fanout http://127.0.0.1:$ORIGIN_PORT {"
		echo "		node_id shield"
		echo "		buffer 65536"
		[[ -n ${FANOUT_OPTIONS:-} ]] && echo "		$FANOUT_OPTIONS"
		echo "	}"
		echo "}"
	} >"$conf"
	(ulimit -n 20000 && XDG_DATA_HOME="$OUT/xdg" XDG_CONFIG_HOME="$OUT/xdg" \
		exec "$BIN/caddy" run --config "$conf" --adapter caddyfile) >>"$OUT/caddy.shield.log" 2>&1 &
	pid=$!
	started+=("$pid")
	server_pids="shield=$pid"
	wait_port "$shield_port"
	edge_pids=()
	fleet_urls=""
	for i in $(seq "$EDGES"); do
		port=$((SERVER_PORT + i - 1))
		port_free "$port"
		conf="$OUT/Caddyfile.edge$i"
		{
			echo "{"
			echo "	admin off"
			echo "	persist_config off"
			echo "	auto_https off"
			echo "}"
			echo "http://127.0.0.1:$port {"
			echo "	sse_fanout http://127.0.0.1:$shield_port {"
			echo "		node_id edge$i"
			echo "		retry_jitter 20%"
			[[ -n ${FANOUT_OPTIONS:-} ]] && echo "		$FANOUT_OPTIONS"
			echo "	}"
			echo "}"
		} >"$conf"
		(ulimit -n 20000 && XDG_DATA_HOME="$OUT/xdg" XDG_CONFIG_HOME="$OUT/xdg" \
			exec "$BIN/caddy" run --config "$conf" --adapter caddyfile) >>"$OUT/caddy.edge$i.log" 2>&1 &
		pid=$!
		started+=("$pid")
		edge_pids+=("$pid")
		server_pids+=",edge$i=$pid"
		fleet_urls+="${fleet_urls:+,}http://127.0.0.1:$port/events"
		wait_port "$port"
	done
}

# nginx_listen is the listen directives of nchan's server for PROTO.
nginx_listen() {
	case $PROTO in
	h1)
		echo "listen 127.0.0.1:$SERVER_PORT backlog=4096;"
		;;
	h1tls | h2)
		local h2=""
		[[ $PROTO == h2 ]] && h2=" http2"
		echo "listen 127.0.0.1:$SERVER_PORT ssl$h2 backlog=4096;"
		echo "listen 127.0.0.1:$PUB_PORT;" # the publisher's, plain HTTP
		echo "ssl_certificate $CERT;"
		echo "ssl_certificate_key $KEY;"
		# nginx 1.22 leaves TLS 1.3 off by default; Caddy and Go speak it.
		echo "ssl_protocols TLSv1.2 TLSv1.3;"
		;;
	esac
}

start_nginx() {
	port_free "$SERVER_PORT"
	if [[ $PROTO != h1 ]]; then
		port_free "$PUB_PORT"
	fi
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
				$(nginx_listen)
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
				# M1's pages: a channel per member, s0 …
				location ~ ^/pub/(s[0-9]+)\$ {
					nchan_publisher http;
					nchan_channel_id \$1;
					nchan_message_buffer_length 1024;
					nchan_message_timeout 60s;
				}
				location ~ ^/events/(s[0-9]+)\$ {
					nchan_subscriber eventsource;
					nchan_channel_id \$1;
					nchan_subscriber_first_message newest;
				}
				location = /events/ {
					nchan_subscriber eventsource;
					nchan_channel_id_split_delimiter ",";
					nchan_channel_id \$arg_streams;
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

workload() { # name -> clients rate size members: clients are pages of members streams, each at rate, if members > 0
	case $1 in
	W1) echo 1000 10 256 0 ;;
	W2) echo 10000 1 256 0 ;;
	W3) echo 1000 100 64 0 ;;
	W4) echo 10000 0 256 0 ;;
	M1) echo 1000 1 256 "$MEMBERS" ;;
	*)
		echo "unknown workload $1" >&2
		return 1
		;;
	esac
}

# page_system says whether system $1 is one for pages (M1).
page_system() {
	case $1 in
	sse_fanout_mux | sse_fanout_each | nchan_mux | nchan_each) return 0 ;;
	esac
	return 1
}

run_one() { # workload system round [clients]
	local wl=$1 sys=$2 round=$3 clients rate size members url pids stats result accept=$ACCEPT_ENCODING
	local pageflags=()
	read -r clients rate size members < <(workload "$wl")
	if [[ -n ${4:-} ]]; then
		clients=$4
		wl="$wl@$4"
	fi
	clients=$((clients / SCALE))
	if [[ -n $SIZE ]]; then
		size=$SIZE
	elif [[ $PAYLOAD == json ]]; then
		size=1024
	fi
	result="$OUT/$wl.$sys.$round.json"
	stats="http://127.0.0.1:$ORIGIN_PORT/stats"
	case $sys in
	sse_fanout_* | encode_*)
		accept=${sys##*_} # the clients accept the system's encoding
		;;
	esac
	case $sys in
	sse_fanout | reverse_proxy | sse_fanout_gzip | sse_fanout_zstd | encode_gzip | encode_zstd)
		start_origin "$rate" "$size"
		start_caddy "$sys"
		url="$SCHEME://127.0.0.1:$SERVER_PORT/events"
		pids="$server_pids,origin=$origin_pid"
		;;
	sse_fanout_mux | sse_fanout_each)
		start_origin "$rate" "$size" "" "$members"
		start_caddy "$sys"
		pids="$server_pids,origin=$origin_pid"
		;;
	direct)
		start_origin "$rate" "$size" direct
		url="$SCHEME://127.0.0.1:$ORIGIN_PORT/events"
		stats="$SCHEME://127.0.0.1:$ORIGIN_PORT/stats"
		pids="server=$origin_pid"
		;;
	caddyfloor)
		start_caddy "$sys" "$rate" "$size"
		url="$SCHEME://127.0.0.1:$SERVER_PORT/events"
		stats="$SCHEME://127.0.0.1:$SERVER_PORT/stats" # its streams, as direct's
		pids="$server_pids"
		;;
	fleet)
		start_origin "$rate" "$size"
		start_fleet
		url=$fleet_urls
		pids="$server_pids,origin=$origin_pid"
		;;
	nchan | nchan_mux | nchan_each)
		start_nginx
		url="$SCHEME://127.0.0.1:$SERVER_PORT/events"
		pids="$server_pids"
		stats=""
		if [[ $rate != 0 ]]; then
			start_publisher "$rate" "$size" "$members"
			pids+=",publisher=$publisher_pid"
		fi
		;;
	*)
		echo "unknown system $sys" >&2
		return 1
		;;
	esac
	# A page reads its members on one stream, /events/?streams=s0,…, or on
	# a stream each, /events/sN, all on its connection over h2 and h3.
	case $sys in
	*_mux)
		url="$SCHEME://127.0.0.1:$SERVER_PORT/events/?streams={members}"
		pageflags=(-members "$MEMBER_NAMES")
		;;
	*_each)
		url="$SCHEME://127.0.0.1:$SERVER_PORT/events/{member}"
		pageflags=(-members "$MEMBER_NAMES" -split)
		;;
	esac

	# In the background, so that a signal to this script is handled at once
	# rather than after the run. With SSELOAD_PROCS, each process takes its
	# share of the clients and of the ramp, the first measures the
	# processes, and their reports are merged.
	local tlsflags=() extra=() p n share procs_pids=() parts=() failed=0
	[[ $PROTO != h1 ]] && tlsflags=(-cacert "$CERT")
	[[ -n $SOURCE_ADDRS ]] && extra+=(-source-addrs "$SOURCE_ADDRS")
	[[ -n $PROGRESS ]] && extra+=(-progress "$PROGRESS")
	[[ $sys == fleet ]] && extra+=(-reconnect)
	n=$SSELOAD_PROCS
	for p in $(seq 0 $((n - 1))); do
		share=$((clients / n + (p < clients % n ? 1 : 0)))
		((share > 0)) || continue
		local part="$result"
		((n > 1)) && part="$OUT/part.$p.json" && parts+=("$part")
		local procflags=()
		((p == 0)) && procflags=(-pid "$pids" ${stats:+-origin-stats "$stats"})
		"$BIN/sseload" -url "$url" -proto "$PROTO" -streams-per-conn "$STREAMS_PER_CONN" "${tlsflags[@]}" "${pageflags[@]+"${pageflags[@]}"}" \
			-clients "$share" -ramp "$(awk -v r="$RAMP" -v n="$n" 'BEGIN { print r / n }')" ${accept:+-accept-encoding "$accept"} \
			-duration "$DURATION" -warmup "$WARMUP" -connect-timeout "${CONNECT_TIMEOUT:-60s}" "${procflags[@]}" "${extra[@]}" \
			-workload "$wl" -system "$sys" -round "$round" -json >"$part" 2>>"$OUT/sseload.log" &
		procs_pids+=($!)
		started+=($!)
	done
	if [[ $sys == fleet && -n $KILL_EDGE_AT ]]; then
		sleep "$KILL_EDGE_AT"
		echo "--- kill -9 edge1 (pid ${edge_pids[0]}) at ${KILL_EDGE_AT}s" >>"$OUT/sseload.log"
		kill -KILL "${edge_pids[0]}" 2>/dev/null || true
	fi
	for p in "${procs_pids[@]}"; do
		wait "$p" || failed=1
	done
	if ((failed)); then
		echo "sseload failed for $wl $sys round $round (see $OUT/sseload.log)" >&2
	fi
	if ((n > 1)); then
		"$BIN/sseload" -merge "${parts[@]}" >"$result"
		rm -f "${parts[@]}"
	fi
	"$BIN/sseload" -table "$result" | sed -n 3p
	if [[ $sys == fleet ]]; then
		"$BIN/sseload" -text "$result" | grep -E '^(resume|sockets|comments|latency):' | sed 's/^/    /'
	fi

	for pid in "${started[@]+"${started[@]}"}"; do
		stop_pid "$pid"
	done
	sleep 1 # let the closed connections drain
}

# --- main --------------------------------------------------------------

echo "--- building into $BIN"
go build -o "$BIN/caddy" ./cmd/caddy
if [[ -n $ENDURANCE ]]; then
	go -C bench build -o "$BIN/sseorigin" ./sseorigin
	go -C bench build -o "$BIN/sseload" ./sseload
	go -C bench build -o "$BIN/sseendure" ./sseendure
	echo "--- endurance run of $ENDURANCE, results in $OUT"
	# Not exec: the trap stops what this script started (nothing yet) and
	# sseendure stops its own processes.
	# shellcheck disable=SC2086 # ENDURANCE_ARGS is a list of flags
	"$BIN/sseendure" -bin "$BIN" -out "$OUT" -duration "$ENDURANCE" -port-base "$PORT_BASE" ${ENDURANCE_ARGS:-}
	exit
fi
if [[ " $SYSTEMS " == *" caddyfloor "* ]]; then
	go -C bench build -o "$BIN/caddyfloor" ./caddyfloor
fi
go -C bench build -o "$BIN/sseorigin" ./sseorigin
go -C bench build -o "$BIN/sseload" ./sseload
if [[ " $SYSTEMS " == *" nchan"* ]] && [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
	echo "nchan is not installed: apt-get install nginx libnginx-mod-nchan" >&2
	exit 1
fi
if [[ $PROTO != h1 ]]; then
	make_cert
fi

echo "--- results in $OUT (PROTO=$PROTO, STREAMS_PER_CONN=$STREAMS_PER_CONN)"
echo "| workload | system | proto | clients held | p50 latency | p99 latency | max | server CPU s per 1M deliveries | RSS per client | origin connections | lost events | bytes per event |"
ran=0
for wl in $WORKLOADS; do
	read -r _ _ _ members < <(workload "$wl")
	for n in ${CLIENTS:-""}; do
		for round in $(seq "$ROUNDS"); do
			for sys in $SYSTEMS; do
				# Pages (M1) are for the page systems, and they for pages.
				is_page=0
				page_system "$sys" && is_page=1
				if (((members > 0) != is_page)); then
					((round == 1)) && [[ -z $n || $n == "${CLIENTS%% *}" ]] &&
						echo "--- $wl skips $sys: M1 runs the page systems, the other workloads the rest" >&2
					continue
				fi
				run_one "$wl" "$sys" "$round" "$n"
				ran=1
			done
		done
	done
done

if ((!ran)); then
	echo "nothing ran: WORKLOADS=M1 takes the page systems (sse_fanout_mux, sse_fanout_each, nchan_mux, nchan_each), the others the rest" >&2
	exit 2
fi
{
	echo
	echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB," \
		"$(uname -sr), $(go version | cut -d' ' -f3), load generator on the same machine, loopback."
	dirty=$(git status --short --untracked-files=no -- '*.go' go.mod | awk '{print $2}' | tr '\n' ' ')
	echo "Code: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+ with uncommitted changes to: $dirty}"
	echo "Command: ${CLIENTS:+CLIENTS=\"$CLIENTS\" }${SOURCE_ADDRS:+SOURCE_ADDRS=$SOURCE_ADDRS }SSELOAD_PROCS=$SSELOAD_PROCS EDGES=$EDGES${KILL_EDGE_AT:+ KILL_EDGE_AT=$KILL_EDGE_AT}${CONNECT_TIMEOUT:+ CONNECT_TIMEOUT=$CONNECT_TIMEOUT} PROTO=$PROTO STREAMS_PER_CONN=$STREAMS_PER_CONN ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP RAMP=$RAMP SCALE=$SCALE" \
		"WORKLOADS=\"$WORKLOADS\" SYSTEMS=\"$SYSTEMS\"${FANOUT_OPTIONS:+ FANOUT_OPTIONS=\"$FANOUT_OPTIONS\"}" \
		"PAYLOAD=$PAYLOAD${SIZE:+ SIZE=$SIZE}${FLOOR_QUEUE_SET:+ FLOOR_QUEUE=$FLOOR_QUEUE}${ACCEPT_ENCODING:+ ACCEPT_ENCODING=\"$ACCEPT_ENCODING\"}" \
		"${CADDY_SERVER_OPTIONS:+CADDY_SERVER_OPTIONS=$(printf %q "$CADDY_SERVER_OPTIONS") }bench/run.sh"
	echo
	"$BIN/sseload" -table -order "$SYSTEMS" "$OUT"/*.json
} | tee "$OUT/table.md"
"$BIN/sseload" -charts "$OUT" "$OUT"/*.json
echo "--- charts: $(cd "$OUT" && ls ./*.svg | tr '\n' ' ')"
