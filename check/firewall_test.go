package check

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dropUDP firewalls UDP to port on loopback for the rest of the test, as a
// cloud security group without 3478/udp does: packets vanish, nothing
// answers.
func dropUDP(t *testing.T, port int) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("iptables is missing: apt-get install iptables")
		}
		t.Skip("iptables is missing: apt-get install iptables")
	}
	rule := []string{"INPUT", "-i", "lo", "-p", "udp", "--dport", strconv.Itoa(port),
		"-m", "comment", "--comment", "callbox-check-test", "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-w", "5", "-I"}, rule...)...).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("iptables: %v: %s", err, out)
		}
		t.Skipf("iptables cannot add a rule here (needs root and netfilter): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-w", "5", "-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables: removing the rule for udp port %d: %v: %s", port, err, out)
		}
	})
}

// TURN's UDP port firewalled: STUN and TURN over UDP time out with advice to
// open the port, TCP still works, and the relay check goes over TCP.
func TestUDPFirewalled(t *testing.T) {
	a := startApp(t, testConfig())
	dropUDP(t, a.TURN().UDPAddr().Port)
	opts := testOptions(a.HTTPURL())
	opts.StepTimeout = time.Second
	rep := runCheck(t, opts)
	if !rep.Failed() {
		t.Fatal("the check passed with TURN's UDP port firewalled")
	}
	port := strconv.Itoa(a.TURN().UDPAddr().Port)
	cases := []struct {
		name   string
		status Status
		detail string
		advice string
	}{
		{NameSTUN, Fail, "timed out", "open UDP port " + port},
		{NameTURNUDP, Fail, "timed out", "open UDP port " + port},
		{NameTURNTCP, OK, "over TCP", ""},
		{NameRelay, OK, "over TCP", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := mustGet(t, rep, tc.name)
			if res.Status != tc.status || !strings.Contains(res.Detail, tc.detail) || !strings.Contains(res.Advice, tc.advice) {
				t.Errorf("got %+v, want %s, detail ~%q, advice ~%q", res, tc.status, tc.detail, tc.advice)
			}
		})
	}
}
