package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{name: "plain", stat: "1234 (turnserver) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 130 0 0 20 0 5 0 100 1000 200",
			want: 3800 * time.Millisecond},
		{name: "name with spaces and parens", stat: "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", want: 30 * time.Millisecond},
		{name: "no paren", stat: "1234 turnserver S 1", wantErr: true},
		{name: "short", stat: "1 (x) S 1 2 3", wantErr: true},
		{name: "negative", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 2 0", wantErr: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 2 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "7451284 80611110 17\n", want: 7451284},
		{in: "0 0 0", want: 0},
		{in: "", wantErr: true},
		{in: "-1 0 0", wantErr: true},
		{in: "x 0 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSchedstat([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{name: "present", status: "Name:\tturnserver\nVmPeak:\t 99 kB\nVmRSS:\t   16180 kB\nThreads:\t5\n", want: 16180 << 10},
		{name: "missing", status: "Name:\tzombie\nState:\tZ\n", wantErr: true},
		{name: "no unit", status: "VmRSS:\t16180\n", wantErr: true},
		{name: "bad number", status: "VmRSS:\t1x kB\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

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

func FuzzProcParsers(f *testing.F) {
	f.Add([]byte("1234 (turnserver) S 1 1234 1234 0 -1 4194560 1 0 0 0 250 130 0 0 20 0 5 0 100 1000 200"))
	f.Add([]byte("VmRSS:\t   16180 kB\n"))
	f.Add([]byte("7451284 80611110 17\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseStatCPU(b); err == nil && d < 0 {
			t.Fatalf("negative CPU %v", d)
		}
		if d, err := parseSchedstat(b); err == nil && d < 0 {
			t.Fatalf("negative run time %v", d)
		}
		if n, err := parseVmRSS(b); err == nil && n < 0 {
			t.Fatalf("negative RSS %d", n)
		}
	})
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
