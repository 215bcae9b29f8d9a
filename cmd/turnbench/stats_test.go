package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 100", hundred, 99.9, 100 * time.Millisecond},
		{"p100", hundred, 100, 100 * time.Millisecond},
		{"p0", hundred, 0, 0},
		{"p1 of 100", hundred, 1, time.Millisecond},
		{"p50 of 3", []time.Duration{1, 2, 3}, 50, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Fatalf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name     string
		vals     []float64
		decimals int
		want     string
	}{
		{"none", nil, 1, "–"},
		{"one", []float64{1.25}, 2, "1.25"},
		{"odd", []float64{3, 1, 2}, 0, "2 (1–3)"},
		{"even", []float64{4, 1, 2, 3}, 1, "2.5 (1.0–4.0)"},
		{"equal", []float64{2, 2}, 1, "2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := spreadOf(tc.vals).format(tc.decimals); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name string
		a, b []float64
		want string
	}{
		{"plain", []float64{9}, []float64{10}, "0.90×"},
		{"medians", []float64{1, 3, 100}, []float64{2, 2, 2}, "1.50×"},
		{"zero divisor", []float64{1}, []float64{0}, "–"},
		{"missing", nil, []float64{1}, "–"},
		{"nan", []float64{math.NaN()}, []float64{1}, "–"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ratio(spreadOf(tc.a), spreadOf(tc.b)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
