package systemd

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// listenerBuffer is turnserver's listenerBuffer: what the sysctl file
// must allow.
const listenerBuffer = 4 << 20

// The sysctl drop-in parses as sysctl.d(5) reads it, names settings this
// kernel has, and allows the buffers callbox asks for.
func TestSysctlDropIn(t *testing.T) {
	f, err := os.Open("99-callbox.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" {
			t.Fatalf("line %d %q: want key = value", n, line)
		}
		if _, err := os.Stat(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))); err != nil {
			t.Errorf("line %d: %s is not a setting of this kernel: %v", n, key, err)
		}
		if v, err := strconv.Atoi(value); err != nil || v < listenerBuffer {
			t.Errorf("line %d: %s = %q, want a number of at least %d", n, key, value, listenerBuffer)
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"net.core.rmem_max", "net.core.wmem_max"} {
		if !seen[key] {
			t.Errorf("%s is not set", key)
		}
	}
}
