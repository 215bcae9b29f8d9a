package main

import (
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", ms(7), 50, 7 * time.Millisecond},
		{"one sample p99", ms(7), 99, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(1, 2), 50, 1 * time.Millisecond},
		{"two samples p51 is the upper", ms(1, 2), 51, 2 * time.Millisecond},
		{"odd count median", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"1..100 p50", hundred, 50, 50 * time.Millisecond},
		{"1..100 p99", hundred, 99, 99 * time.Millisecond},
		{"1..100 p100", hundred, 100, 100 * time.Millisecond},
		{"1..100 p0 is nothing", hundred, 0, 0},
		{"1..1000 p99 is the 990th", thousand, 99, 990 * time.Microsecond},
		{"1..1000 p99.9 is the 999th", thousand, 99.9, 999 * time.Microsecond},
		{"p above 100 is the max", ms(1, 9), 150, 9 * time.Millisecond},
		{"outlier sets p99 of 10", ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 50), 99, 50 * time.Millisecond},
		{"outlier below p90 of 10", ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 50), 90, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d samples, %g) = %s, want %s", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestRecorderConcurrent(t *testing.T) {
	const writers, each = 8, 500
	r := newRecorder(writers*each - 100) // 100 too few: those count as dropped
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.add(time.Duration(w*each + i))
			}
		}()
	}
	wg.Wait()
	got := r.sorted()
	if len(got) != writers*each-100 {
		t.Fatalf("%d samples, want %d", len(got), writers*each-100)
	}
	if d := r.dropped.Load(); d != 100 {
		t.Errorf("dropped %d, want 100", d)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("not sorted at %d: %s after %s", i, got[i], got[i-1])
		}
	}
}
