package turnserver

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestTokenBucket(t *testing.T) {
	const sec = int64(time.Second)
	type step struct {
		at    int64 // nanoseconds after start
		bytes int
		ok    bool
	}
	cases := []struct {
		name  string
		rate  float64 // bytes per second
		steps []step
	}{
		{"burst then empty", 10_000, []step{{0, 5000, true}, {0, 1, false}}},
		{"refills at the rate", 10_000, []step{{0, 5000, true}, {sec / 10, 1000, true}, {sec / 10, 1, false}}},
		{"refill capped at burst", 10_000, []step{{0, 5000, true}, {10 * sec, 5000, true}, {10 * sec, 1, false}}},
		{"minimum burst passes a full datagram", 1000, []step{{0, 1600, true}, {0, 1600, true}, {0, 1, false}}},
		{"oversized datagram never passes", 1000, []step{{0, 4000, false}, {0, 1000, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b tokenBucket
			b.init(tc.rate)
			start := b.last
			for i, s := range tc.steps {
				if got := b.allowAt(s.bytes, start+s.at); got != s.ok {
					t.Fatalf("step %d (%d bytes at %v): %v, want %v", i, s.bytes, time.Duration(s.at), got, s.ok)
				}
			}
		})
	}
	var off tokenBucket
	off.init(0)
	if !off.allow(1 << 20) {
		t.Error("a zero rate must not limit")
	}
}

func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLogLimiter()
		a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		if !l.allow(a) || l.allow(a) || !l.allow(b) {
			t.Fatal("first line per address must pass, the second must not")
		}
		time.Sleep(logInterval - time.Second)
		if l.allow(a) {
			t.Fatal("allowed again before the interval")
		}
		time.Sleep(time.Second)
		if !l.allow(a) {
			t.Fatal("not allowed after the interval")
		}
		// Many addresses at once: memory stays bounded.
		for i := range 2 * maxLimited {
			l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		}
		if n := len(l.last); n > maxLimited {
			t.Fatalf("limiter holds %d addresses, bound is %d", n, maxLimited)
		}
	})
}

func TestSlogAdapter(t *testing.T) {
	var buf bytes.Buffer
	log := slogFactory{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}.NewLogger("turn")
	log.Tracef("trace %d", 1) // below Debug: dropped
	log.Infof("info %d", 2)   // pion's chatter: Debug
	log.Warnf("warn %d", 3)
	log.Error("error 4")
	out := buf.String()
	for _, want := range []string{"level=DEBUG msg=\"info 2\" pion=turn", "level=WARN msg=\"warn 3\"", "level=ERROR msg=\"error 4\""} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "trace") {
		t.Errorf("trace line logged at Debug level:\n%s", out)
	}
}
