package main

import (
	"os"
	"testing"
	"time"
)

// TestSampleProc reads this test process: CPU only grows and RSS is real.
func TestSampleProc(t *testing.T) {
	a, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	b, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b.runCPU <= a.runCPU || b.statCPU < a.statCPU || b.rss <= 0 {
		t.Fatalf("before %+v, after %+v: want CPU to grow and RSS > 0", a, b)
	}
	if _, err := sampleProc(1 << 30); err == nil {
		t.Fatal("a PID that cannot exist gave no error")
	}
}

func TestParseUDPRcvbufErrors(t *testing.T) {
	tests := []struct {
		name    string
		snmp    string
		want    int64
		wantErr bool
	}{
		{name: "linux 6", snmp: "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 1389701 39878 212171 1642156 212170 0\nUdpLite: InDatagrams\nUdpLite: 0\n", want: 212170},
		{name: "no udp", snmp: "Ip: Forwarding\nIp: 1\n", wantErr: true},
		{name: "no column", snmp: "Udp: InDatagrams\nUdp: 5\n", wantErr: true},
		{name: "bad value", snmp: "Udp: RcvbufErrors\nUdp: x\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUDPRcvbufErrors([]byte(tc.snmp))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseCPUSteal(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    int64
		wantErr bool
	}{
		{name: "linux 6", stat: "cpu  278516 13752 298709 1283358 2059 0 71533 3272 0 0\ncpu0 140543 6302 147740 643359 430 0 35635 1612 0 0\nintr 1\n", want: 3272},
		{name: "no cpu line", stat: "intr 1\n", wantErr: true},
		{name: "old kernel", stat: "cpu  1 2 3 4\n", wantErr: true},
		{name: "bad value", stat: "cpu  1 2 3 4 5 6 7 x\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCPUSteal([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
