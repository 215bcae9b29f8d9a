package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, o options)
	}{
		{"defaults", nil, "", func(t *testing.T, o options) {
			if len(o.counts) != 2 || o.counts[0] != 1000 || o.counts[1] != 10000 || o.room != 2 || o.rate != 5000 ||
				o.duration != 10*time.Second || strings.Join(o.servers, ",") != "callbox,peerjs" {
				t.Errorf("defaults %+v", o)
			}
		}},
		{"one server, spaces", []string{"-servers", " peerjs ", "-n", "10, 20"}, "", func(t *testing.T, o options) {
			if len(o.servers) != 1 || o.servers[0] != "peerjs" || o.counts[0] != 10 || o.counts[1] != 20 {
				t.Errorf("got %+v", o)
			}
		}},
		{"unknown server", []string{"-servers", "callbox,janus"}, `"janus" is not callbox or peerjs`, nil},
		{"n not a number", []string{"-n", "1k"}, "-n", nil},
		{"n above the file limit", []string{"-n", "20000"}, "between 2 and 19000", nil},
		{"n not a multiple of room", []string{"-n", "1001"}, "not a multiple of -room 2", nil},
		{"room of one", []string{"-room", "1"}, "-room 1", nil},
		{"zero rate", []string{"-rate", "0"}, "-rate 0", nil},
		{"endless duration", []string{"-duration", "1h"}, "-duration 1h0m0s", nil},
		{"no concurrency", []string{"-concurrency", "0"}, "-concurrency 0", nil},
		{"stray argument", []string{"now"}, `unexpected argument "now"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestPickPeer(t *testing.T) {
	room := []*benchClient{{i: 0}, {i: 1}, {i: 2}}
	tests := []struct {
		name  string
		room  []*benchClient
		from  int
		round int64
		want  int // index in room; -1 for none
	}{
		{"pair", room[:2], 0, 0, 1},
		{"pair other way", room[:2], 1, 0, 0},
		{"pair later round", room[:2], 1, 5, 0},
		{"three, round 0", room, 0, 0, 1},
		{"three, round 1", room, 0, 1, 2},
		{"three, round 2 wraps", room, 0, 2, 1},
		{"three, last member", room, 2, 0, 0},
		{"alone", room[:1], 0, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pickPeer(tt.room, tt.room[tt.from], tt.round)
			switch {
			case tt.want < 0 && got != nil:
				t.Errorf("got client %d, want none", got.i)
			case tt.want >= 0 && got != tt.room[tt.want]:
				t.Errorf("got %v, want client %d", got, tt.want)
			case got == tt.room[tt.from]:
				t.Error("picked itself")
			}
		})
	}
}

func TestReadyWriter(t *testing.T) {
	tail := newTailWriter(16)
	w := &readyWriter{prefix: "listening ", port: make(chan int, 1), next: tail}
	// The line arrives in pieces, as pipes deliver it; a second one is ignored.
	for _, chunk := range []string{"starting\nlisten", "ing 4", "1234\nlistening 5\n", "more output here\n"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case p := <-w.port:
		if p != 41234 {
			t.Errorf("port %d, want 41234", p)
		}
	default:
		t.Fatal("no port reported")
	}
	if got := tail.String(); got != "ore output here" {
		t.Errorf("tail %q, want the last 16 bytes, trimmed", got)
	}
}

func TestTable(t *testing.T) {
	rs := []result{
		{Server: "callbox", N: 1000, Joined: 1000, JoinRate: 9000, RSSBefore: 10 << 20, RSSIdle: 10<<20 + 4*1024*1000,
			Sent: 100, Received: 100, MsgRate: 5000, P50: 150 * time.Microsecond, P99: 1500 * time.Microsecond, Max: 12 * time.Millisecond, CPUPerJoin: 85 * time.Microsecond, CPUPerMsg: 6200 * time.Nanosecond, LoadAvg: 0.42},
		{Server: "peerjs", N: 1000, Joined: 998, Sent: 100, Received: 97, Errors: 2,
			ErrorsByCategory: map[string]int64{"lost": 1, "not joined": 1}},
	}
	got := table(rs, options{room: 2, rate: 5000, duration: 10 * time.Second})
	for _, want := range []string{
		"| callbox | 1000 | 9000 | 4.0 | 5000 | 150 µs | 1.50 ms | 12.0 ms | 85 µs | 6.2 µs | 0 | 0.4 |",
		"| peerjs | 1000 |",
		"| lost 3, not joined 2 |",
		"rooms of 2; message phase: 5000 msg/s for 10s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
