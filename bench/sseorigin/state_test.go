package main

import (
	"path/filepath"
	"testing"
	"time"
)

func TestStateCarriesIDsOverARestart(t *testing.T) {
	name := filepath.Join(t.TempDir(), "origin.state")
	seq, _, err := readState(name)
	if err != nil || seq != 0 {
		t.Fatalf("a missing state file gave %d, %v; want a first start", seq, err)
	}
	sent := time.Unix(1_800_000_000, 0)
	if err := writeState(name, 5000, sent); err != nil {
		t.Fatal(err)
	}
	c := clock{interval: 100 * time.Millisecond, size: 128}
	if c.after, c.afterSent, err = readState(name); err != nil || c.after != 5000 || !c.afterSent.Equal(sent) {
		t.Fatalf("read back %d %v, %v", c.after, c.afterSent, err)
	}
	h := c.history(3)
	if len(h) != 3 || h[0].Seq() != 4998 || h[2].Seq() != 5000 {
		t.Fatalf("history %d events, want 4998 to 5000", len(h))
	}
	if got := len(clock{after: 2, afterSent: sent, interval: time.Second}.history(10)); got != 2 {
		t.Errorf("history of a run that sent 2 events has %d", got)
	}
	if got := len(clock{}.history(10)); got != 0 {
		t.Errorf("history of a first start has %d events", got)
	}
}
