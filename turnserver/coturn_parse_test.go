package turnserver_test

import (
	"net/netip"
	"testing"
)

// Output captured from coturn 4.6.1's tools on this machine.
const (
	uclientOK = `1: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
4: : start_mclient: msz=2, tot_send_msgs=5, tot_recv_msgs=5, tot_send_bytes ~ 500, tot_recv_bytes ~ 500
6: : start_mclient: msz=2, tot_send_msgs=9, tot_recv_msgs=8, tot_send_bytes ~ 900, tot_recv_bytes ~ 800
6: : start_mclient: tot_send_msgs=10, tot_recv_msgs=10
6: : start_mclient: tot_send_bytes ~ 1000, tot_recv_bytes ~ 1000
6: : Total transmit time is 6
6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
6: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
`
	uclientLossy = `5: : start_mclient: tot_send_msgs=10, tot_recv_msgs=7
5: : Total lost packets 3 (30.000000%), total send dropped 1 (10.000000%)
`
	uclientRefused = "0: : error 400 ()\n0: : ERROR: Cannot complete Allocation\n"
	stunclientOK   = "0: : IPv4. UDP reflexive addr: 127.0.0.1:40956\n0: : IPv4. UDP reflexive addr: 127.0.0.1:40956\n"
)

func TestParseUClient(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    uclientReport
		wantErr bool
	}{
		{name: "success, last totals win", out: uclientOK, want: uclientReport{Sent: 10, Received: 10}},
		{name: "loss", out: uclientLossy, want: uclientReport{Sent: 10, Received: 7, Lost: 3, SendDropped: 1}},
		{name: "refused", out: uclientRefused, wantErr: true},
		{name: "totals without loss line", out: "tot_send_msgs=1, tot_recv_msgs=1\n", wantErr: true},
		{name: "empty", out: "", wantErr: true},
		{name: "number too large", out: "tot_send_msgs=99999999999999999999, tot_recv_msgs=1\nTotal lost packets 0 (0%), total send dropped 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUClient(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStunclient(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    netip.AddrPort
		wantErr bool
	}{
		{name: "ipv4", out: stunclientOK, want: netip.MustParseAddrPort("127.0.0.1:40956")},
		{name: "copies disagree", out: "UDP reflexive addr: 127.0.0.1:1\nUDP reflexive addr: 127.0.0.1:2\n", wantErr: true},
		{name: "not an address", out: "UDP reflexive addr: nowhere\n", wantErr: true},
		{name: "nothing", out: "0: : Cannot complete binding\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStunclient(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzParseToolOutput: the parsers read another program's output; whatever
// it prints, they return a value or an error, never panic, and a success
// holds only numbers the text contained.
func FuzzParseToolOutput(f *testing.F) {
	for _, s := range []string{uclientOK, uclientLossy, uclientRefused, stunclientOK, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		if r, err := parseUClient(out); err == nil && (r.Sent < 0 || r.Received < 0 || r.Lost < 0 || r.SendDropped < 0) {
			t.Fatalf("negative count %+v from %q", r, out)
		}
		if ap, err := parseStunclient(out); err == nil && !ap.IsValid() {
			t.Fatalf("invalid address from %q", out)
		}
	})
}
