package check

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestWriteText(t *testing.T) {
	cases := []struct {
		name   string
		checks []Result
		want   []string
	}{
		{
			name:   "all ok",
			checks: []Result{{Name: NameDNS, Status: OK, Detail: "a.example: A 203.0.113.7"}},
			want:   []string{"callbox check https://a.example\n", "  ok    dns  a.example: A 203.0.113.7\n", "all checks passed\n"},
		},
		{
			name: "failure with advice",
			checks: []Result{
				{Name: NameHTTPS, Status: Fail, Detail: "certificate expired", Advice: "renew it"},
				{Name: NameSTUN, Status: Warn, Detail: "loopback"},
			},
			want: []string{"  FAIL  https  certificate expired\n", "               → renew it\n", "  warn  stun   loopback\n", "1 failure, 1 warning: "},
		},
		{
			name: "server text cannot break lines",
			checks: []Result{
				{Name: NameWebSocket, Status: Fail, Detail: "hello refused: x (evil\nFAKE ok line)"},
			},
			want: []string{"(evil FAKE ok line)\n"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := (Report{URL: "https://a.example", Checks: tc.checks}).WriteText(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	rep := Report{URL: "https://a.example", Checks: []Result{
		{Name: NameDNS, Status: OK, Detail: "fine"},
		{Name: NameTURNUDP, Status: Fail, Detail: "relay 10.0.0.5", Advice: "turn.public_ip is probably wrong"},
	}}
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		OK     bool     `json:"ok"`
		URL    string   `json:"url"`
		Checks []Result `json:"checks"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	if got.OK || got.URL != rep.URL || len(got.Checks) != 2 || got.Checks[1] != rep.Checks[1] {
		t.Errorf("round trip: %+v", got)
	}
}

// A full check of a healthy callbox on loopback, for the cost of one run.
func BenchmarkRun(b *testing.B) {
	a := startApp(b, testConfig())
	b.ReportAllocs()
	for b.Loop() {
		if rep := Run(context.Background(), testOptions(a.HTTPURL())); rep.Failed() {
			b.Fatal("check failed")
		}
	}
}
