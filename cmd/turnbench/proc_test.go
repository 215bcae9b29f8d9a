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

// TestParseMachineCounters covers the parsers of the machine-wide
// counters the log shows beside each measurement.
func TestParseMachineCounters(t *testing.T) {
	snmp, stat := parseUDPRcvbufErrors, parseCPUSteal
	tests := []struct {
		name    string
		parse   func([]byte) (int64, error)
		text    string
		want    int64
		wantErr bool
	}{
		{name: "snmp linux 6", parse: snmp, text: "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 1389701 39878 212171 1642156 212170 0\nUdpLite: InDatagrams\nUdpLite: 0\n", want: 212170},
		{name: "snmp no udp", parse: snmp, text: "Ip: Forwarding\nIp: 1\n", wantErr: true},
		{name: "snmp no column", parse: snmp, text: "Udp: InDatagrams\nUdp: 5\n", wantErr: true},
		{name: "snmp bad value", parse: snmp, text: "Udp: RcvbufErrors\nUdp: x\n", wantErr: true},
		{name: "stat linux 6", parse: stat, text: "cpu  278516 13752 298709 1283358 2059 0 71533 3272 0 0\ncpu0 140543 6302 147740 643359 430 0 35635 1612 0 0\nintr 1\n", want: 3272},
		{name: "stat no cpu line", parse: stat, text: "intr 1\n", wantErr: true},
		{name: "stat old kernel", parse: stat, text: "cpu  1 2 3 4\n", wantErr: true},
		{name: "stat bad value", parse: stat, text: "cpu  1 2 3 4 5 6 7 x\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.parse([]byte(tc.text))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
