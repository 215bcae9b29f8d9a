package signal

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

// The idle-memory harness: the hub runs in a child process (this test
// binary, re-executed) so the clients' memory does not mix with the
// server's; the benchmark opens N clients that join and stay idle, and
// reads the child's RSS and Go memory statistics. cmd/signalbench is the
// full side-by-side tool; this one is for tuning the hub itself.
//
//	go test -run '^$' -bench IdleMemory -benchtime 1x ./signal
//	CALLBOX_MEM_N=5000 go test -run '^$' -bench IdleMemory -benchtime 1x ./signal
//
// Measured on the 2-core dev machine (load average 25 from other work, so
// join rates are not comparable), per idle joined connection, rooms of 4:
//
//	                                          heap   stack  RSS (GOGC=100)  RSS after scavenge
//	reader inside the HTTP handler            13.9K  8.4K   24.6K           24.0K
//	fresh reader goroutine, 512 B read buf     3.3K  8.4K   15.2K           13.3K
//	  + gorilla reuses net/http's 4 KiB reader 7.7K  8.4K   18.6K           17.8K
//	  + no write buffer pool (4 KiB per conn)  8.5K  8.4K   19.3K           18.5K
//	parked reader (2 KiB stack), 320 B buf,
//	  token bucket in the client (N=5,000)     2.8K  2.1K    7.7K            6.0K
//	  the same at N=10,000                     2.7K  2.1K    7.2K            5.7K
//	  N=5,000 with GOGC=50 / GOGC=25           2.7K  2.1K    6.9K / 6.4K     5.9K / 5.7K
//	no reader goroutine: epoll set, workers
//	  (poll_linux.go), N=5,000, load 35       2.2K  0.07K   4.6K            3.3K
//
// What is left of the heap is mostly not ours: gorilla's Conn (450 B), the
// read buffer (400 B), net's fd and addresses (290 B); the peer, client and
// map entries are about 550 B. RSS over live memory is the GC's headroom
// (GOGC). Before the epoll set, the parked goroutine added 480 B of heap
// and its 2 KiB stack.
//
// CALLBOX_MEM_PROFILE=FILE saves the child's heap profile with the clients
// connected. CALLBOX_MEM_WRITEBUF (bytes; "pool" or "none") overrides the
// upgrader's write buffer in the child, to measure what it costs. The read
// buffer is no knob: the reader must see gorilla's read buffer (to take
// pongs and to know when it is empty), so it is always the hub's own.

type memStats struct {
	RSS        int64 `json:"rss"`
	HeapInuse  int64 `json:"heapInuse"`
	StackInuse int64 `json:"stackInuse"`
	Goroutines int   `json:"goroutines"`
}

func readMem(freeOS bool) memStats {
	if freeOS {
		debug.FreeOSMemory()
	} else {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memStats{RSS: rss(), HeapInuse: int64(ms.HeapInuse), StackInuse: int64(ms.StackInuse), Goroutines: runtime.NumGoroutine()}
}

// rss is this process's resident set in bytes, from /proc.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestHubProcess is the child: it serves a hub until its stdin closes.
func TestHubProcess(t *testing.T) {
	if os.Getenv("CALLBOX_HUB_CHILD") != "1" {
		t.Skip("the child process of BenchmarkIdleMemory")
	}
	if os.Getenv("CALLBOX_MEM_PROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, so per-connection bytes add up exactly
	}
	cfg := config.Default().Signal
	cfg.MaxConnectionsPerIP = 1 << 20
	cfg.MaxRooms = 1 << 20
	hub, err := NewHub(cfg, Options{ICE: testICE(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	switch v := os.Getenv("CALLBOX_MEM_WRITEBUF"); v {
	case "", "pool":
	case "none":
		hub.upgrader.WriteBufferPool, hub.upgrader.WriteBufferSize = nil, 0
	default:
		hub.upgrader.WriteBufferPool = nil
		hub.upgrader.WriteBufferSize, _ = strconv.Atoi(v)
	}
	mux := http.NewServeMux()
	hub.Routes(mux)
	mux.Handle("GET /debug/pprof/heap", pprof.Handler("heap"))
	mux.HandleFunc("GET /debug/mem", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(readMem(r.URL.Query().Get("free") == "1"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	fmt.Printf("ADDR %s\n", ln.Addr())
	bufio.NewReader(os.Stdin).ReadString('\n') // the parent closes stdin to stop us
	hub.Shutdown(context.Background())
	srv.Close()
}

func BenchmarkIdleMemory(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("CALLBOX_MEM_N")); err == nil && v > 0 {
		n = v
	}
	const roomSize = 4
	cmd := exec.Command(os.Args[0], "-test.run=^TestHubProcess$")
	cmd.Env = append(os.Environ(), "CALLBOX_HUB_CHILD=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	go func() {
		for sc.Scan() { // drain the child's output until it exits
		}
	}()
	if addr == "" {
		b.Fatal("the child did not print its address")
	}
	mem := func(free bool) memStats {
		resp, err := http.Get("http://" + addr + "/debug/mem?free=" + map[bool]string{true: "1", false: "0"}[free])
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var m memStats
		json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	base := mem(true)

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	var failed error
	var mu sync.Mutex
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
			if err == nil {
				hello, _ := json.Marshal(map[string]any{"type": "hello", "version": 1, "room": fmt.Sprintf("room%d", i/roomSize), "name": "idle"})
				err = ws.WriteMessage(websocket.TextMessage, hello)
			}
			if err == nil {
				ws.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _, err = ws.ReadMessage() // the welcome
			}
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
				return
			}
			conns[i] = ws
		}()
	}
	wg.Wait()
	joined := time.Since(start)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if failed != nil {
		b.Fatal(failed)
	}
	time.Sleep(2 * time.Second) // joined events delivered, writers ended
	gc := mem(false)
	freed := mem(true)
	if path := os.Getenv("CALLBOX_MEM_PROFILE"); path != "" {
		resp, err := http.Get("http://" + addr + "/debug/pprof/heap?gc=1")
		if err != nil {
			b.Fatal(err)
		}
		f, _ := os.Create(path)
		io.Copy(f, resp.Body)
		f.Close()
		resp.Body.Close()
	}
	per := func(a, z int64) float64 { return float64(z-a) / float64(n) }
	b.ReportMetric(per(base.RSS, gc.RSS), "rss-B/conn")
	b.ReportMetric(per(base.RSS, freed.RSS), "rss-freed-B/conn")
	b.ReportMetric(per(base.HeapInuse, freed.HeapInuse), "heap-B/conn")
	b.ReportMetric(per(base.StackInuse, freed.StackInuse), "stack-B/conn")
	b.ReportMetric(float64(freed.Goroutines-base.Goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(float64(n)/joined.Seconds(), "joins/s")
}
