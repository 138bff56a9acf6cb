#!/bin/bash
# A = v0.1.0 (317f873), B = main HEAD; h2 W1 three rounds each, A B B A; then h1 W1 W2 one round A B
set -u
out=/tmp/ab; rm -rf $out; mkdir -p $out
run() { # tree label proto workloads rounds
  ( cd $1 && BIN=/tmp/ab-bin-$2 OUT=$out/$3-$2-$6 PORT_BASE=19800 ROUNDS=$5 DURATION=10s WORKLOADS="$4" SYSTEMS=sse_fanout PROTO=$3 bench/run.sh > $out/$3-$2-$6.log 2>&1 )
}
run /work/wt-v010 A h2 W1 3 1
run /work/main B h2 W1 3 1
run /work/main B h2 W1 3 2
run /work/wt-v010 A h2 W1 3 2
run /work/wt-v010 A h1 "W1 W2" 1 1
run /work/main B h1 "W1 W2" 1 1
echo done > $out/DONE
