package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// A probe is the payload of every relayed packet: the send time and a
// trial number, so RTT needs no per-packet state and late packets of an
// earlier trial are not counted in the next. The echo peer adds when it
// got the probe and when it sent it back, which splits the round trip
// into its legs (rttSample).
//
//	[0:8]   send time, ns since the bench's epoch
//	[8:12]  sequence number within the flow
//	[12:16] trial number
//	[16:24] the echo peer's kernel receive time, ns since the epoch
//	[24:32] the echo peer's send time, ns since the epoch
const (
	probeHeader = 16
	probeLegs   = 32
)

// epoch is the bench's clock origin; time.Since reads the monotonic clock.
var epoch = time.Now()

const (
	batchSize  = 64      // datagrams per recvmmsg/sendmmsg
	socketBuf  = 4 << 20 // bytes of kernel buffer per generator socket
	drainLimit = time.Second
	setupPar   = 16 // allocations set up or released at once
)

// parseChannelData splits a TURN ChannelData message (RFC 5766 §11.4).
func parseChannelData(b []byte) (channel uint16, data []byte, ok bool) {
	if len(b) < 4 || b[0]&0xC0 != 0x40 {
		return 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b)-4 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(b[0:2]), b[4 : 4+n], true
}

// parseProbe reads the header a probe payload starts with.
func parseProbe(data []byte) (sent time.Duration, seq, trial uint32, ok bool) {
	if len(data) < probeHeader {
		return 0, 0, 0, false
	}
	return time.Duration(binary.BigEndian.Uint64(data[0:8])), binary.BigEndian.Uint32(data[8:12]),
		binary.BigEndian.Uint32(data[12:16]), true
}

// enlargeBuffers raises a socket's kernel buffers past rmem_max when root
// (SO_RCVBUFFORCE), so generator-side drops are not blamed on a server.
func enlargeBuffers(c *net.UDPConn) {
	raw, err := c.SyscallConn()
	if err == nil {
		_ = raw.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, socketBuf) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, socketBuf)
			}
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, socketBuf) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, socketBuf)
			}
		})
	}
}

func newBatch(n, size int) []ipv4.Message {
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, size)}
	}
	return msgs
}

// stampSpace is the control-message room of one SCM_TIMESTAMPNS.
var stampSpace = unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

// newStampedBatch is newBatch with room for each datagram's kernel
// receive time.
func newStampedBatch(n, size int) []ipv4.Message {
	msgs := newBatch(n, size)
	for i := range msgs {
		msgs[i].OOB = make([]byte, stampSpace)
	}
	return msgs
}

// enableStamps asks the kernel to stamp each datagram with the time it
// reached c (SO_TIMESTAMPNS): the legs of a round trip then end where the
// datagram arrived, not where a reader got the CPU to read it.
func enableStamps(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("turnbench: SO_TIMESTAMPNS: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return fmt.Errorf("turnbench: SO_TIMESTAMPNS: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("turnbench: SO_TIMESTAMPNS: %w", serr)
	}
	return nil
}

// kernelStamp finds the SCM_TIMESTAMPNS in a datagram's control messages:
// wall-clock nanoseconds.
func kernelStamp(oob []byte) (wallNanos int64, ok bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || h.Len > uint64(len(oob)) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS &&
			h.Len >= uint64(unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{})))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Nano(), true
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return 0, false
}

// epochWall is the bench's epoch on the wall clock, as of now: kernel
// stamps are wall time, the bench's own are monotonic since the epoch.
func epochWall() int64 {
	now := time.Now()
	return now.UnixNano() - int64(now.Sub(epoch))
}

// echoPeer is the UDP peer the relays send to: it returns every datagram to
// its sender (the relay address) and counts those of the current trial.
type echoPeer struct {
	conn  *net.UDPConn
	pc    *ipv4.PacketConn
	trial *atomic.Uint32
	count atomic.Int64
	done  chan struct{}
}

func startEcho(trial *atomic.Uint32) (*echoPeer, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("turnbench: echo peer: %w", err)
	}
	enlargeBuffers(conn)
	if err := enableStamps(conn); err != nil {
		conn.Close()
		return nil, err
	}
	e := &echoPeer{conn: conn, pc: ipv4.NewPacketConn(conn), trial: trial, done: make(chan struct{})}
	go e.run()
	return e, nil
}

func (e *echoPeer) addr() netip.AddrPort { return e.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (e *echoPeer) run() {
	defer close(e.done)
	msgs := newStampedBatch(batchSize, 2048)
	for {
		n, err := e.pc.ReadBatch(msgs, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		cur, counted, wall := e.trial.Load(), int64(0), epochWall()
		for i := range msgs[:n] {
			m := &msgs[i]
			if _, _, trial, ok := parseProbe(m.Buffers[0][:m.N]); ok && trial == cur {
				counted++
				if rx, ok := kernelStamp(m.OOB[:m.NN]); ok && m.N >= probeLegs {
					binary.BigEndian.PutUint64(m.Buffers[0][16:24], uint64(rx-wall))
				}
			}
			m.Buffers[0] = m.Buffers[0][:m.N]
			m.OOB = m.OOB[:0] // the stamp is not for sending
		}
		e.count.Add(counted)
		tx := uint64(time.Since(epoch))
		for i := range msgs[:n] {
			if msgs[i].N >= probeLegs {
				binary.BigEndian.PutUint64(msgs[i].Buffers[0][24:32], tx)
			}
		}
		for sent := 0; sent < n; {
			k, err := e.pc.WriteBatch(msgs[sent:n], 0)
			if err != nil {
				break
			}
			sent += k
		}
		for i := range msgs[:n] {
			msgs[i].Buffers[0] = msgs[i].Buffers[0][:cap(msgs[i].Buffers[0])]
			msgs[i].OOB = msgs[i].OOB[:cap(msgs[i].OOB)]
		}
	}
}

func (e *echoPeer) close() {
	e.conn.Close()
	<-e.done
}

// flow is one allocation's data plane: raw ChannelData on the session's
// socket.
type flow struct {
	sess *session
	pc   *ipv4.PacketConn
	// owned by the sender
	out  []ipv4.Message
	outN int
	sent int64
	// written by the reader, read after it stops
	recv    atomic.Int64
	samples []rttSample
	in      []ipv4.Message // the reader's buffers, kept across trials
}

// setupFlows creates n allocations, each with a channel bound to one of the
// echo peers, a few at a time.
func setupFlows(server netip.AddrPort, secret string, n int, echoes []*echoPeer, deadline time.Time) ([]*flow, error) {
	flows := make([]*flow, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range min(setupPar, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || time.Now().After(deadline) {
					return
				}
				flows[i], errs[i] = setupFlow(server, secret, i, echoes[i%len(echoes)].addr())
			}
		})
	}
	wg.Wait()
	var failed []error
	for i, f := range flows {
		if errs[i] != nil {
			failed = append(failed, errs[i])
		} else if f == nil {
			failed = append(failed, fmt.Errorf("allocation %d: setup deadline passed", i))
		}
	}
	if len(failed) > 0 {
		releaseFlows(flows)
		return nil, fmt.Errorf("turnbench: %d of %d allocations failed, first: %w", len(failed), n, failed[0])
	}
	return flows, nil
}

func setupFlow(server netip.AddrPort, secret string, i int, peer netip.AddrPort) (*flow, error) {
	user, pass := restCredentials(secret, fmt.Sprintf("bench%d", i), time.Now().Add(time.Hour))
	sess, err := allocate(server, user, pass)
	// A fresh socket gets a fresh port from the kernel, away from an
	// allocation left over on the old one.
	for try := 0; try < 3 && isAllocationMismatch(err); try++ {
		sess, err = allocate(server, user, pass)
	}
	if err != nil {
		return nil, err
	}
	if err := sess.channelBind(peer); err != nil {
		sess.conn.Close()
		return nil, err
	}
	enlargeBuffers(sess.conn)
	if err := enableStamps(sess.conn); err != nil {
		sess.conn.Close()
		return nil, err
	}
	return &flow{sess: sess, pc: ipv4.NewPacketConn(sess.conn)}, nil
}

// releaseFlows deletes the allocations; errors are ignored because the
// server process ends soon anyway and its state is measured per scenario.
func releaseFlows(flows []*flow) {
	var wg sync.WaitGroup
	ch := make(chan *flow)
	for range setupPar {
		wg.Go(func() {
			for f := range ch {
				_ = f.sess.release()
			}
		})
	}
	for _, f := range flows {
		if f != nil {
			ch <- f
		}
	}
	close(ch)
	wg.Wait()
}

// trialResult is what one timed run of a relay load measured.
type trialResult struct {
	target         float64 // packets per second offered, all flows
	sent, up, down int64   // sent by clients, received by echoes, back at clients
	elapsed        time.Duration
	rtts           []time.Duration // sorted
	samples        []rttSample     // every probe back, in no order
	cpuRun         time.Duration
	cpuStat        time.Duration
	rss            int64
	genCPU         time.Duration // the generator's own (this process)
	kernelDrops    int64         // Udp RcvbufErrors on the whole machine
	steal          time.Duration // the hypervisor's steal time, all CPUs
}

// rttSample is one probe's send time (since epoch), its round trip and,
// when the kernel stamped its arrival and the echo peer its turn, the legs
// of that round trip, which add up to it: up (client → server → peer
// socket), echo (the echo peer's own time), down (peer → server → client
// socket) and reader (until the generator's reader took it).
type rttSample struct {
	sent, rtt              time.Duration
	up, echo, down, reader time.Duration
}

// legs is s's legs in the order up, echo, down, reader, and whether the
// probe carried them (the kernel stamped it at the echo peer and back).
func (s rttSample) legs() ([4]time.Duration, bool) {
	return [4]time.Duration{s.up, s.echo, s.down, s.reader}, s.up != 0
}

// newRTTSample reads the legs out of a probe back at time now; oob holds
// the client socket's receive stamp, wall is the epoch on the wall clock.
func newRTTSample(sent, now time.Duration, probe, oob []byte, wall int64) rttSample {
	s := rttSample{sent: sent, rtt: now - sent}
	rx, ok := kernelStamp(oob)
	if !ok || len(probe) < probeLegs {
		return s
	}
	echoRx := time.Duration(binary.BigEndian.Uint64(probe[16:24]))
	echoTx := time.Duration(binary.BigEndian.Uint64(probe[24:32]))
	if echoRx == 0 || echoTx == 0 {
		return s
	}
	back := time.Duration(rx - wall)
	s.up, s.echo, s.down, s.reader = echoRx-sent, echoTx-echoRx, back-echoTx, now-back
	return s
}

func (r trialResult) lossPct() float64 {
	if r.sent == 0 {
		return 100
	}
	return 100 * float64(r.sent-r.down) / float64(r.sent)
}
func (r trialResult) sentPPS() float64 { return float64(r.sent) / r.elapsed.Seconds() }
func (r trialResult) upPPS() float64   { return float64(r.up) / r.elapsed.Seconds() }
func (r trialResult) downPPS() float64 { return float64(r.down) / r.elapsed.Seconds() }

// cpuPerPacket is server CPU per relayed packet (each direction counts).
func (r trialResult) cpuPerPacket(stat bool) float64 {
	relayed := r.up + r.down
	if relayed == 0 {
		return 0
	}
	cpu := r.cpuRun
	if stat {
		cpu = r.cpuStat
	}
	return float64(cpu) / float64(time.Microsecond) / float64(relayed)
}

// runTrial sends size-byte probes at perFlow packets per second on every
// flow for d, waits for the echoes to return, and measures the server
// process pid over the window.
func runTrial(flows []*flow, echoes []*echoPeer, trial *atomic.Uint32, pid int, perFlow float64, size int, d time.Duration) (trialResult, error) {
	// Sampled before the readers start, so an error leaves nothing running.
	before, err := sampleProc(pid)
	if err != nil {
		return trialResult{}, err
	}
	id := trial.Add(1)
	for _, e := range echoes {
		e.count.Store(0)
	}
	var readers sync.WaitGroup
	for _, f := range flows {
		f.recv.Store(0)
		f.samples = f.samples[:0]
		f.sent = 0
		_ = f.sess.conn.SetReadDeadline(time.Time{})
		if f.in == nil {
			// Few flows run fast and fill batches; many flows run slow
			// and would only hold idle buffers.
			f.in = newStampedBatch(max(2, min(batchSize/4, 256/len(flows))), 2048)
		}
		readers.Go(func() { f.read(id) })
	}
	genBefore, _ := sampleProc(os.Getpid())
	dropsBefore := udpRcvbufErrors()
	stealBefore := cpuSteal()
	total := perFlow * float64(len(flows))
	start := time.Now()
	sendPaced(flows, total, size, d, id)
	elapsed := time.Since(start)

	var sent int64
	for _, f := range flows {
		sent += f.sent
	}
	var down int64
	for drainEnd := time.Now().Add(drainLimit); time.Now().Before(drainEnd); time.Sleep(5 * time.Millisecond) {
		down = 0
		for _, f := range flows {
			down += f.recv.Load()
		}
		if down >= sent {
			break
		}
	}
	after, err := sampleProc(pid)
	genAfter, _ := sampleProc(os.Getpid())
	drops := counterDelta(dropsBefore, udpRcvbufErrors())
	steal := counterDelta(stealBefore, cpuSteal())
	for _, f := range flows {
		_ = f.sess.conn.SetReadDeadline(time.Now()) // stops the reader
	}
	readers.Wait()
	if err != nil {
		return trialResult{}, err
	}
	res := trialResult{target: total, sent: sent, elapsed: elapsed,
		cpuRun: after.runCPU - before.runCPU, cpuStat: after.statCPU - before.statCPU, rss: after.rss,
		genCPU: genAfter.runCPU - genBefore.runCPU, kernelDrops: drops, steal: steal}
	for _, e := range echoes {
		res.up += e.count.Load()
	}
	for _, f := range flows {
		res.down += f.recv.Load()
		res.samples = append(res.samples, f.samples...)
	}
	res.rtts = make([]time.Duration, len(res.samples))
	for i, s := range res.samples {
		res.rtts[i] = s.rtt
	}
	slices.Sort(res.rtts)
	return res, nil
}

// read counts the probes of this trial that come back and keeps their RTT.
func (f *flow) read(trial uint32) {
	msgs := f.in
	for {
		n, err := f.pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return
			}
			continue // e.g. ECONNREFUSED from an earlier ICMP; the socket still works
		}
		now, wall := time.Since(epoch), epochWall()
		for i := range msgs[:n] {
			_, data, ok := parseChannelData(msgs[i].Buffers[0][:msgs[i].N])
			if !ok {
				continue
			}
			sent, _, t, ok := parseProbe(data)
			if !ok || t != trial {
				continue
			}
			f.samples = append(f.samples, newRTTSample(sent, now, data, msgs[i].OOB[:msgs[i].NN], wall))
			f.recv.Add(1)
		}
	}
}

// sendPaced spreads total packets per second evenly over the flows for d:
// packet k goes to flow k mod n at start + k/total. One goroutine sends
// for every flow, waking about once a millisecond and writing what is due
// with one sendmmsg per flow, so the generator stays cheap next to the
// server it measures.
func sendPaced(flows []*flow, total float64, size int, d time.Duration, trial uint32) {
	n := int64(len(flows))
	for _, f := range flows {
		if len(f.out) == 0 || len(f.out[0].Buffers[0]) != 4+size {
			f.out = newBatch(batchSize, 4+size)
			for i := range f.out {
				b := f.out[i].Buffers[0]
				binary.BigEndian.PutUint16(b[0:2], channelNumber)
				binary.BigEndian.PutUint16(b[2:4], uint16(size))
			}
		}
		f.outN = 0
	}
	count := int64(total * d.Seconds())
	start := time.Now()
	var dirty []*flow
	for next := int64(0); next < count; {
		due := min(int64(time.Since(start).Seconds()*total)+1, count)
		now := uint64(time.Since(epoch))
		for k := next; k < due; k++ {
			f := flows[k%n]
			if f.outN == 0 {
				dirty = append(dirty, f)
			}
			b := f.out[f.outN].Buffers[0]
			binary.BigEndian.PutUint64(b[4:12], now)
			binary.BigEndian.PutUint32(b[12:16], uint32(k/n))
			binary.BigEndian.PutUint32(b[16:20], trial)
			f.outN++
			if f.outN == len(f.out) {
				f.flush()
			}
		}
		for _, f := range dirty {
			f.flush()
		}
		dirty = dirty[:0]
		next = due
		// Sleep until the next packet is due, but at least a millisecond:
		// a busy loop would cost the server the core it needs.
		wait := time.Duration(float64(next)/total*float64(time.Second)) - time.Since(start)
		time.Sleep(max(wait, time.Millisecond))
	}
}

// flush writes the queued datagrams; ones the kernel refuses are not sent
// and so not counted.
func (f *flow) flush() {
	for done := 0; done < f.outN; {
		k, err := f.pc.WriteBatch(f.out[done:f.outN], 0)
		if err != nil {
			break
		}
		done += k
		f.sent += int64(k)
	}
	f.outN = 0
}
