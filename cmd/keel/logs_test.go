package main

import (
	"testing"
	"time"

	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"10m", now.Add(-10 * time.Minute), false},
		{"1h30m", now.Add(-90 * time.Minute), false},
		{"2026-12-03T11:00:00.5Z", time.Date(2026, 12, 3, 11, 0, 0, 5e8, time.UTC), false},
		{"2026-12-03T11:00:00+01:00", time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC), false},
		{"2026-12-02", time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), false},
		{"1700000000", time.Unix(1700000000, 0), false},
		{"-5m", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	} {
		got, err := parseSince(tc.in, now)
		if tc.err {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("parseSince(%q) = %v, %v; want InvalidArgument", tc.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestLogOpt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want cio.Log
		err  bool
	}{
		{"max-size=4KiB", cio.Log{MaxSize: 4 << 10}, false},
		{"max-size=10m,max-files=5", cio.Log{MaxSize: 10 << 20, MaxFiles: 5}, false},
		{"max-file=2", cio.Log{MaxFiles: 2}, false}, // Docker's spelling
		{"max-size=0", cio.Log{}, true},
		{"max-files=0", cio.Log{}, true},
		{"max-size", cio.Log{}, true},
		{"mode=non-blocking", cio.Log{}, true},
	} {
		var l cio.Log
		err := (&logOptValue{log: &l}).Set(tc.in)
		if tc.err {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("--log-opt %s: %+v, %v; want InvalidArgument", tc.in, l, err)
			}
			continue
		}
		if err != nil || l != tc.want {
			t.Errorf("--log-opt %s: %+v, %v; want %+v", tc.in, l, err, tc.want)
		}
	}
}
