package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireNetns skips t without root, ip or iptables (what network
// namespace tests need), and fails it instead under CI=true.
func RequireNetns(t testing.TB) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	msg := ""
	switch {
	case os.Geteuid() != 0:
		msg = "needs root (network namespaces, veth, iptables)"
	case len(missing) > 0:
		msg = fmt.Sprintf("missing %v: install the Debian packages iproute2 and iptables", missing)
	default:
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
