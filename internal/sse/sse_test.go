package sse

import "testing"

func TestRetryOnly(t *testing.T) {
	for _, tc := range []struct {
		ev   Event
		want bool
	}{
		{Event{Retry: 500, HasRetry: true}, true},
		{Event{}, true},
		{Event{Retry: 500, HasRetry: true, HasData: true}, false},
		{Event{Retry: 500, HasRetry: true, ID: "1", HasID: true}, false},
		{Event{Retry: 500, HasRetry: true, Type: "tick"}, false},
		{Event{ID: "", HasID: true}, false}, // an empty id resets the cursor
	} {
		if got := tc.ev.RetryOnly(); got != tc.want {
			t.Errorf("%+v.RetryOnly() = %v, want %v", tc.ev, got, tc.want)
		}
	}
}
