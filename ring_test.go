package ssefanout

// The ring of frames.

import "testing"

func TestRingFindID(t *testing.T) {
	r := newRing(4, 0)
	for _, id := range []string{"a", "b ", "a", "c", "d"} { // "a" at 1 is evicted
		r.push(&frame{id: id, setsID: true, bytes: []byte("x")})
	}
	for _, tc := range []struct {
		id     string
		window int
		want   uint64
		found  bool
	}{
		{"a", 4, 3, true},  // the latest occurrence
		{"d", 4, 5, true},  // the newest frame
		{"b ", 4, 2, true}, // exact
		{"b", 4, 2, true},  // as HTTP trims it from a Last-Event-ID header
		{"b", 2, 0, false}, // outside the replay window
		{"z", 4, 0, false},
	} {
		got, found := r.findID(tc.id, tc.window)
		if got != tc.want || found != tc.found {
			t.Errorf("findID(%q, %d) = %d, %v; want %d, %v", tc.id, tc.window, got, found, tc.want, tc.found)
		}
	}
}

func TestRingBytesBound(t *testing.T) {
	r := newRing(100, 10)
	for i := 0; i < 5; i++ {
		f := &frame{bytes: []byte("1234")}
		f.size.Store(4)
		r.push(f)
	}
	if r.size.Load() > 10 || r.tail != 4 || r.head != 5 {
		t.Fatalf("size %d, tail %d, head %d; want at most 10 bytes, frames 4..5", r.size.Load(), r.tail, r.head)
	}
	if r.get(3) != nil {
		t.Fatal("the evicted frame 3 is still held")
	}
	if r.get(4) == nil || r.get(5) == nil {
		t.Fatal("frames 4 and 5 are not held")
	}
}
