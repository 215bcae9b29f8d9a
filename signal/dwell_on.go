//go:build signaldwell

package signal

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// The dwell histogram of a benchmark build (go build -tags signaldwell):
// how long a relayed signal spends in the hub, from the moment the poller
// found its socket readable to the end of the write to its target (the
// write carries the loopback delivery to the receiver's socket). What the
// load client measures beyond that is the kernel's wake-up of the hub, the
// client's own scheduling, and both processes sharing the cores.
// CALLBOX_DWELL_FILE names the file written at Shutdown.

// dwellMark is when the poller claimed the socket; set by the claimer
// before the reader runs, read by that reader.
type dwellMark struct{ at int64 }

func (d *dwellMark) mark() { d.at = time.Now().UnixNano() }

func (d *dwellMark) relayed() {
	if d.at == 0 {
		return
	}
	us := (time.Now().UnixNano() - d.at) / 1e3
	k := 0
	for ; k < len(dwellBuckets)-1 && int64(1)<<k <= us; k++ {
	}
	dwellBuckets[k].Add(1)
}

// dwellBuckets[k] counts dwells below 2^k µs (and at least 2^(k-1)).
var dwellBuckets [24]atomic.Int64

func (h *Hub) reportDwell() {
	path := os.Getenv("CALLBOX_DWELL_FILE")
	if path == "" {
		return
	}
	var b strings.Builder
	var total int64
	for i := range dwellBuckets {
		total += dwellBuckets[i].Load()
	}
	var sum int64
	for k := range dwellBuckets {
		n := dwellBuckets[k].Load()
		if n == 0 {
			continue
		}
		sum += n
		fmt.Fprintf(&b, "< %d µs\t%d\t%.4f\n", int64(1)<<k, n, float64(sum)/float64(total))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		h.log.Warn("signal: dwell histogram", "err", err)
	}
}
