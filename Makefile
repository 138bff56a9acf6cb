# Benchmarks of issue 6; see bench/run.sh for the knobs (ROUNDS, DURATION,
# SCALE, WORKLOADS, SYSTEMS, …), which pass through the environment.
.PHONY: bench bench-peers bench-pages bench-smoke

# sse_fanout against Caddy's reverse_proxy, interleaved.
bench:
	bench/run.sh

# sse_fanout against nginx + nchan (apt-get install nginx libnginx-mod-nchan).
bench-peers:
	SYSTEMS="sse_fanout nchan" bench/run.sh

# Pages of ten streams (issue 22): sse_fanout with multiplex_param and with an
# EventSource per stream, against nchan's multiplexed subscriber and nchan's
# own per-stream subscribers; PROTO=h2 for HTTP/2.
bench-pages:
	WORKLOADS=M1 SYSTEMS="sse_fanout_mux nchan_mux sse_fanout_each nchan_each" bench/run.sh

# A quick check that everything runs: one short round, a tenth of the clients.
bench-smoke:
	ROUNDS=1 DURATION=3s WARMUP=1s SCALE=10 bench/run.sh
