package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile (0 < p <= 100) of sorted: a
// sample that really occurred, never an interpolation.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 || p <= 0 {
		return 0
	}
	if p >= 100 {
		return sorted[n-1]
	}
	return sorted[nearestRank(p, n)-1]
}

// nearestRank is the 1-based rank of the p-th percentile of n samples. The
// slack keeps float error from pushing an exact rank up by one (99.9 % of
// 1,000 computes as 999.0000000000001).
func nearestRank(p float64, n int) int {
	return max(1, min(int(math.Ceil(p/100*float64(n)-1e-9)), n))
}

// spread summarises one figure over rounds.
type spread struct {
	med, lo, hi float64
	n           int
}

func spreadOf(vals []float64) spread {
	if len(vals) == 0 {
		return spread{med: math.NaN(), lo: math.NaN(), hi: math.NaN()}
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med: med, lo: s[0], hi: s[len(s)-1], n: len(s)}
}

// format prints "median (min–max)" with the given number of decimals, or
// only the median for a single round.
func (s spread) format(decimals int) string {
	if s.n == 0 || math.IsNaN(s.med) {
		return "–"
	}
	if s.n == 1 || s.lo == s.hi {
		return fmt.Sprintf("%.*f", decimals, s.med)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", decimals, s.med, decimals, s.lo, decimals, s.hi)
}

// ratio is a÷b of two medians, "–" when either is missing or b is zero.
func ratio(a, b spread) string {
	if a.n == 0 || b.n == 0 || b.med == 0 || math.IsNaN(a.med) || math.IsNaN(b.med) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a.med/b.med)
}

// quietSteal is the steal a window may have had and still count in the
// paired and pooled comparisons when -max-steal is not set: 0–20 ms of a 5 s
// window is what this kind of machine loses when its host is quiet.
const quietSteal = 20 * time.Millisecond

// paired compares one figure of callbox with another server's round by
// round. A round's figures follow the hypervisor's steal in its window
// more than either server, so only rounds where neither window lost more
// than the limit count, and each pair is compared within its round: the
// medians over all rounds mix quiet rounds of one server with stolen ones
// of the other.
type paired struct {
	rounds int     // rounds where both windows were quiet
	atMost int     // of them, rounds where callbox's figure was at most the other's
	ratio  float64 // median of callbox ÷ other over those rounds; NaN without any
	// lo and hi bound the median ratio at 95 % confidence (medianInterval);
	// NaN with fewer than 6 rounds.
	lo, hi float64
}

// pairRounds pairs the i-th rounds of callbox and other (rows are appended
// round by round, so the same index is the same round) on figure f.
func pairRounds(callbox, other []row, limit time.Duration, f func(row) float64) paired {
	var ratios []float64
	p := paired{}
	for i := range min(len(callbox), len(other)) {
		c, o := callbox[i], other[i]
		// A figure of 0 is a window with nothing measured (a p99 of 0: no
		// probe back): nothing to compare, and it must not count as at most
		// the other's.
		if c.steal > limit || o.steal > limit || f(c) <= 0 || f(o) <= 0 {
			continue
		}
		ratios = append(ratios, f(c)/f(o))
		if f(c) <= f(o) {
			p.atMost++
		}
	}
	p.rounds = len(ratios)
	p.ratio = spreadOf(ratios).med
	p.lo, p.hi = medianInterval(ratios)
	return p
}

// medianInterval is the sign test's 95 % confidence interval for the
// median of vals: the k-th lowest and the k-th highest value, with k the
// largest rank such that the true median lies outside them with
// probability at most 5 %, whatever the distribution (each value falls
// below the median with probability ½, so the count below is binomial).
// It asks nothing of the shape of a round's noise, which here is neither
// normal nor symmetric (a stolen millisecond only ever lengthens a tail).
// NaN, NaN below 6 values, where even the lowest and highest leave more
// than 5 %.
func medianInterval(vals []float64) (lo, hi float64) {
	n := len(vals)
	// tail is P(at most j of n below the median) = Σ_{i≤j} C(n,i) / 2^n.
	tail, term, k := 0.0, math.Exp2(-float64(n)), 0
	for j := 0; j < n; j++ {
		tail += term
		if 2*tail > 0.05 {
			break
		}
		k = j + 1
		term = term * float64(n-j) / float64(j+1)
	}
	if k == 0 {
		return math.NaN(), math.NaN()
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	return s[k-1], s[n-k]
}

// histSpan is the longest round trip latencyHist tells apart; longer ones
// count in its last bucket. A probe is lost after far less.
const histSpan = 100 * time.Millisecond

// latencyHist counts durations in 1 µs buckets up to histSpan: every
// probe of every round in 400 KB, however long the run, where keeping
// the samples would take 8 bytes each (800,000 for (b) over 16
// rounds, per server).
type latencyHist struct {
	counts []uint32
	n      int
}

func (h *latencyHist) add(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint32, histSpan/time.Microsecond+1)
	}
	h.counts[min(max(d, 0)/time.Microsecond, histSpan/time.Microsecond)]++
	h.n++
}

// percentile is the nearest-rank percentile (as percentile on a sorted
// slice), to the microsecond below.
func (h *latencyHist) percentile(p float64) time.Duration {
	if h.n == 0 || p <= 0 {
		return 0
	}
	rank, seen := nearestRank(p, h.n), 0
	for i, c := range h.counts {
		if seen += int(c); seen >= rank {
			return time.Duration(i) * time.Microsecond
		}
	}
	return histSpan // unreachable: the counts add up to n
}

// pooledRTT is one server's probes of one scenario over every quiet
// window: the tail of the whole run rather than a median of each round's.
type pooledRTT struct {
	windows int
	rtt     latencyHist
	legs    [4]latencyHist // up, echo, down, reader; stamped probes only
}

func (p *pooledRTT) add(samples []rttSample) {
	p.windows++
	for _, s := range samples {
		p.rtt.add(s.rtt)
		if l, ok := s.legs(); ok {
			for i, d := range l {
				p.legs[i].add(d)
			}
		}
	}
}
