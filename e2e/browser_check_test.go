package e2e

import "testing"

// checkResult is window.callboxCheck.result (web/static/js/check.js).
type checkResult struct {
	OK   bool `json:"ok"`
	STUN struct {
		OK      bool   `json:"ok"`
		Address string `json:"address"`
	} `json:"stun"`
	TURN map[string]struct {
		Offered bool   `json:"offered"`
		OK      bool   `json:"ok"`
		Address string `json:"address"`
	} `json:"turn"`
	Candidates []map[string]any `json:"candidates"`
	Errors     []map[string]any `json:"errors"`
	Timings    []map[string]any `json:"timings"`
	Verdict    string           `json:"verdict"`
	Advice     []string         `json:"advice"`
}

// /check gathers candidates from callbox's STUN and TURN and says what works;
// with UDP to the TURN port dropped it says calls relay over TCP.
func TestBrowserCheck(t *testing.T) {
	tests := []struct {
		name      string
		dropUDP   bool
		stun, udp bool
		verdict   string
	}{
		{"open", false, true, true, "Calls will work from this network."},
		{"udp-blocked", true, false, false, "Calls will work, relayed over TCP."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// In parallel: one browser each, mostly waiting for timeouts, and
			// the dropped port belongs to this subtest's server alone.
			t.Parallel()
			art := newArtifacts(t)
			s := startCallbox(t, art, nil)
			if tt.dropUDP {
				dropPort(t, art, "udp", s.TURN().UDPAddr().Port)
			}
			b := startBrowsers(t, art, func(string) string { return s.HTTPURL() + "/check" }, "check")[0]
			var res checkResult
			waitUntil(t, "the check to finish", connectTimeout, func() (bool, string, error) {
				var err error
				res, err = evalJS[checkResult](b, `window.callboxCheck ? window.callboxCheck.done : null`)
				return err == nil, "", err
			})
			art.logf("check result: %+v", res)
			b.screenshot("check")
			if res.STUN.OK != tt.stun {
				t.Errorf("STUN ok = %v, want %v", res.STUN.OK, tt.stun)
			}
			if r := res.TURN["udp"]; !r.Offered || r.OK != tt.udp {
				t.Errorf("TURN over UDP: %+v, want offered, ok %v", r, tt.udp)
			}
			if r := res.TURN["tcp"]; !r.Offered || !r.OK {
				t.Errorf("TURN over TCP: %+v, want offered and working", r)
			}
			if !res.OK || res.Verdict != tt.verdict {
				t.Errorf("verdict %q (ok %v), want %q", res.Verdict, res.OK, tt.verdict)
			}
		})
	}
}
