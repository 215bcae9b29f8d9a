//go:build linux && !callbox_portable

package turnserver

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// portableTests are the tests (name prefixes) that go through the data
// plane's sockets: the fast path, pion's queues, the peer policy, and
// coturn's client.
var portableTests = []string{"TestFastPath", "TestRelay", "TestPionQueueBounded", "TestDataLoops", "TestInteropUClient",
	"TestBitrateCap", "TestNoPermissionDropped", "TestSTUNBinding", "TestProtectedPorts", "TestPeerPolicyAnswers403"}

// TestPortableDataPlane runs the data-plane tests again on the portable
// build (a goroutine per socket, loop_other.go: what non-Linux systems
// get), which `go test ./...` on Linux does not compile otherwise, so it
// would rot unseen.
func TestPortableDataPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the portable build's run (about 35 s)")
	}
	gobin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("no go command to build the portable variant: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	run := "^(" + strings.Join(portableTests, "|") + ")"
	cmd := exec.CommandContext(ctx, gobin, "test", "-count=1", "-race", "-v", "-tags", "callbox_portable", "-run", run, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1") // -race needs cgo
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -tags callbox_portable: %v\n%s", err, out)
	}
	// A renamed test would drop out of -run silently.
	for _, name := range portableTests {
		if !strings.Contains(string(out), "--- PASS: "+name) {
			t.Errorf("the portable run passed no test named %s*; renamed? Output:\n%s", name, out)
		}
	}
}
