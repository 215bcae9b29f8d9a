package main

import (
	"slices"
	"sync/atomic"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample with at least p% of the samples at
// or below it. It is a real sample, never an interpolation, so a p99 of a run
// is a latency some message actually had.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 || p <= 0 {
		return 0
	}
	if p >= 100 {
		return sorted[len(sorted)-1]
	}
	// rank = ceil(p/100 * n), 1-based; integer maths in hundredths of a
	// percent keeps 99.9 from rounding the wrong way in floating point.
	n := len(sorted)
	hp := int(p*100 + 0.5)
	rank := (hp*n + 9999) / 10000
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// recorder collects latency samples from many reader goroutines without a
// lock: each sample takes the next slot of a slice sized for the run.
type recorder struct {
	samples []int64 // nanoseconds; slots below next are written
	stamps  []int64 // when each sample's message was sent (run clock), for -latency-log
	next    atomic.Int64
	dropped atomic.Int64 // samples past the capacity (a run that outran its estimate)
}

func newRecorder(capacity int) *recorder {
	return &recorder{samples: make([]int64, capacity), stamps: make([]int64, capacity)}
}

// addAt is add for a message sent at stamp.
func (r *recorder) addAt(stamp, d time.Duration) {
	i := r.next.Add(1) - 1
	if i >= int64(len(r.samples)) {
		r.dropped.Add(1)
		return
	}
	atomic.StoreInt64(&r.stamps[i], int64(stamp))
	atomic.StoreInt64(&r.samples[i], int64(d))
}

// pairs returns (send stamp, latency) of every sample, in arrival order.
func (r *recorder) pairs() [][2]int64 {
	n := min(r.next.Load(), int64(len(r.samples)))
	out := make([][2]int64, n)
	for i := range out {
		out[i] = [2]int64{atomic.LoadInt64(&r.stamps[i]), atomic.LoadInt64(&r.samples[i])}
	}
	return out
}

func (r *recorder) add(d time.Duration) {
	i := r.next.Add(1) - 1
	if i >= int64(len(r.samples)) {
		r.dropped.Add(1)
		return
	}
	atomic.StoreInt64(&r.samples[i], int64(d))
}

// sorted returns the samples recorded so far, sorted. Call it after the
// writers are done.
func (r *recorder) sorted() []time.Duration {
	n := min(r.next.Load(), int64(len(r.samples)))
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(atomic.LoadInt64(&r.samples[i]))
	}
	slices.Sort(out)
	return out
}
