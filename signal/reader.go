package signal

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The reader of a socket. An idle socket is most of a hub's sockets, so
// what an idle reader holds is what a connection costs. A goroutine parked
// inside gorilla's NextReader keeps a stack of 8 KiB (the read path is deep,
// and JSON handling grows the stack, which the runtime then cannot shrink
// below four times what is in use); even a goroutine parked on the bare
// socket keeps 2 KiB of stack and 0.4 KiB of runtime state. So on plain TCP
// (Linux) an idle socket has no goroutine at all: it waits in the hub's
// epoll set (poll_linux.go), and when bytes arrive the poller goroutine or
// a worker serves it: reads until the socket is empty, handles every
// message, and gives it back (claim and release make that goroutine the
// socket's only reader).
//
// Over TLS (or any conn without a file descriptor, or off Linux) the plain
// loop reads, one goroutine for the socket's whole life. Either way the
// reader is counted once in h.wg from startReader to its end, parked or
// not; the last one tells the hub the socket is gone.

// startReader begins reading c. The caller has done h.wg.Add(1).
func (c *client) startReader() {
	if c.raw != nil {
		if p := c.h.poller(); p != nil {
			// Nothing has been read yet: the buffer can change its source.
			c.sr = sockReader{conn: c.ws.NetConn(), raw: c.raw}
			c.br.Reset(&c.sr)
			err := p.add(c)
			if err == nil {
				return
			}
			c.h.log.Warn("signal: socket not polled; reading it in a goroutine", "err", err)
		}
	}
	go c.readLoop()
}

// poller is the hub's epoll set, made for the first plain TCP socket: a hub
// that serves only TLS or pipes (synctest bubbles, where a goroutine waiting
// on a real descriptor would keep time from advancing) never starts one.
func (h *Hub) poller() *poller {
	h.pollOnce.Do(func() {
		var err error
		if h.poll, err = newPoller(); err != nil {
			h.log.Warn("signal: no epoll; one reader goroutine per socket", "err", err)
		}
	})
	return h.poll
}

// closePoller stops the poller, if any, and keeps one from starting.
func (h *Hub) closePoller() {
	h.pollOnce.Do(func() {})
	h.poll.close()
}

// A polled socket's pollState: the goroutine that moves it from pollIdle
// to pollServing (the poller, on an event) is its only reader until it
// moves it back. An event while it is served sets pollPending, which sends
// the reader round once more before it lets go: with edge-triggered
// events, bytes that arrive after its last read are announced only once.
const (
	pollIdle int32 = iota
	pollServing
	pollPending
)

// claim makes the caller c's reader; false when c already has one (which
// then reads once more).
func (c *client) claim() bool {
	for {
		switch c.pollState.Load() {
		case pollIdle:
			if c.pollState.CompareAndSwap(pollIdle, pollServing) {
				return true
			}
		case pollServing:
			if c.pollState.CompareAndSwap(pollServing, pollPending) {
				return false
			}
		default:
			return false
		}
	}
}

// release gives c back to the poller once its socket was found empty;
// false when an event came meanwhile: the reader must look again.
func (c *client) release() bool {
	if c.pollState.CompareAndSwap(pollServing, pollIdle) {
		return true
	}
	c.pollState.Store(pollServing) // was pending
	return false
}

// errEmpty: a read that must not wait found the socket empty.
var errEmpty = errors.New("signal: socket empty")

// sockReader is what a polled socket's read buffer (br) reads from. Reads
// wait as the conn's do (gorilla in the middle of a frame must have its
// end), except during probe, which does not wait and reports an empty
// socket as errEmpty. drained tells whether the last read left the socket
// empty (it returned less than asked): with edge-triggered events, the
// reader may give a socket back only then.
type sockReader struct {
	conn    net.Conn
	raw     syscall.RawConn
	probe   bool // owned by the reader, like the rest
	drained bool
}

func (s *sockReader) Read(p []byte) (int, error) {
	var n int
	var err error
	if s.probe {
		n, err = readSocket(s.raw, p)
	} else {
		n, err = s.conn.Read(p)
	}
	s.drained = n < len(p) || err != nil
	return n, err
}

// next makes sure the read buffer holds bytes, reading without waiting:
// false when the socket was found empty and c was given back to the
// poller, or when c has ended.
func (c *client) next() bool {
	for c.br.Buffered() == 0 {
		if c.sr.drained && c.release() {
			return false
		}
		c.sr.probe = true
		_, err := c.br.Peek(1)
		c.sr.probe = false
		if err != nil && err != errEmpty {
			c.end(readErrReason(err))
			return false
		}
	}
	return true
}

// serve is a worker's turn with c: it reads and handles messages until the
// socket is empty, then gives it back to the poller.
func (c *client) serve() {
	c.sr.drained = false // what the last turn saw says nothing now
	for {
		if c.br.Buffered() == 0 && c.closing() {
			// A closing socket is read to its end here, waiting if need
			// be: the close handshake is short, and gorilla may stand
			// mid-message after too_large.
			if _, err := c.br.Peek(1); err != nil {
				c.end(readErrReason(err))
				return
			}
		}
		if !c.next() {
			return
		}
		c.takePongs()
		if c.br.Buffered() > 0 {
			reason, ok := c.readOne()
			if !ok {
				c.end(reason)
				return
			}
		}
	}
}

// quickLimit bounds the messages the poller serves of one socket before a
// worker takes over: a client that keeps sending must not hold up the
// others' events.
const quickLimit = 8

// serveQuick is serve for the poller's own goroutine, which must never
// wait: reads that do not wait, and only whole data frames already
// buffered, at most quickLimit of them. It returns false, with nothing
// done that waits, when a worker must go on (a frame not all here, a
// control frame, a closing socket, a busy one).
func (c *client) serveQuick() bool {
	c.sr.drained = false
	for i := 0; ; i++ {
		if !c.next() {
			return true
		}
		c.takePongs()
		if c.br.Buffered() == 0 {
			continue
		}
		if i >= quickLimit || c.closing() || !c.dataFrameBuffered() {
			return false
		}
		reason, ok := c.readOne()
		if !ok {
			c.end(reason)
			return true
		}
	}
}

// dataFrameBuffered tells whether the read buffer holds a whole final text
// or binary frame, which gorilla then reads without touching the socket
// (after a control frame it would wait for the next data frame).
func (c *client) dataFrameBuffered() bool {
	n := c.br.Buffered()
	b, _ := c.br.Peek(n) // buffered: no read
	if n < 2 || b[0]&0x80 == 0 || (b[0]&0x0f != 1 && b[0]&0x0f != 2) {
		return false
	}
	size, head := int(b[1]&0x7f), 2
	switch size {
	case 126:
		if n < 4 {
			return false
		}
		size, head = int(b[2])<<8|int(b[3]), 4
	case 127:
		return false // 64 KiB or more: never all in the read buffer
	}
	if b[1]&0x80 != 0 {
		head += 4 // the mask
	}
	return head+size <= n
}

// takePongs consumes the empty pongs answering the hub's pings straight
// from the read buffer: gorilla's NextReader would handle them and then
// wait for a data frame, holding a goroutine on an idle socket.
func (c *client) takePongs() {
	for c.br.Buffered() >= emptyPongLen {
		b, _ := c.br.Peek(emptyPongLen) // buffered: no read
		if !isEmptyPong(b) {
			return
		}
		c.br.Discard(emptyPongLen)
		c.lastRead.Store(time.Now().UnixNano())
	}
}

// readLoop is the plain reader: one goroutine from the first message to
// the last.
func (c *client) readLoop() {
	for {
		if reason, ok := c.readOne(); !ok {
			c.end(reason)
			return
		}
	}
}

// awaitEnded waits, at most max, until every one of clients has ended: an
// aborted socket's reader ends on its own time (a parked one is first woken
// through the poller).
func (h *Hub) awaitEnded(clients []*client, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		left := 0
		for _, c := range clients {
			if _, ok := h.clients[c]; ok {
				left++
			}
		}
		h.mu.Unlock()
		if left == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// end is the last reader's last act.
func (c *client) end(reason string) {
	defer c.h.wg.Done()
	if c.raw != nil {
		c.h.poll.del(c) // before the close frees the descriptor's number; nil-safe
	}
	c.ws.NetConn().Close()
	c.h.disconnect(c, c.endReason(reason))
}

// readOne reads and handles one message; false when the socket is done.
func (c *client) readOne() (reason string, ok bool) {
	if c.takeText() {
		return "", true
	}
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return readErrReason(err), false
	}
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	max := int64(c.h.conf().MaxMessageBytes)
	bp := readBufs.Get().(*[]byte)
	defer putReadBuf(bp)
	data, err := readFrame((*bp)[:0], r, max+1)
	*bp = data
	if err != nil {
		return readErrReason(err), false
	}
	c.take(mt, data, now)
	return "", true
}

// take handles one message read whole.
func (c *client) take(mt int, data []byte, now time.Time) {
	max := int64(c.h.conf().MaxMessageBytes)
	switch {
	case c.closing():
		// A close is under way: only the handshake matters now.
	case int64(len(data)) > max:
		c.fail(protoErr(CodeTooLarge, true, "message over %d bytes", max))
	case !c.allow(now):
	case mt != websocket.TextMessage:
		c.fail(protoErr(CodeBadMessage, false, "binary frames are not part of the protocol"))
	default:
		c.handleMessage(data)
	}
}

// takeText handles a whole, unfragmented, masked text frame of at most
// [signal] max_message_bytes straight from the read buffer, unmasked in
// place: what gorilla would do, without its reader object and the copy
// into a message buffer. Anything else (another frame kind, a frame not
// all buffered, a closing socket, where gorilla may stand mid-message)
// is left to gorilla: false.
func (c *client) takeText() bool {
	if c.closing() {
		return false // gorilla may stand mid-message (too_large)
	}
	b, _ := c.br.Peek(c.br.Buffered()) // buffered: no read
	data, n, ok := bufferedText(b, c.h.conf().MaxMessageBytes)
	if !ok {
		return false // untouched: gorilla reads it
	}
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	// handle keeps nothing of data, and nothing reads into the buffer
	// before the next message: it can go before the handling.
	c.br.Discard(n)
	c.take(websocket.TextMessage, data, now)
	return true
}

// bufferedText finds a whole, final, masked text frame of at most max
// payload bytes at the start of b and unmasks its payload in place: data,
// and n, the frame's length in b. ok is false for anything else.
func bufferedText(b []byte, max int) (data []byte, n int, ok bool) {
	// 0x81: FIN, no reserved bits (no extension is negotiated), text.
	if len(b) < 6 || b[0] != 0x81 || b[1]&0x80 == 0 {
		return nil, 0, false
	}
	size, head := int(b[1]&0x7f), 2
	switch size {
	case 126:
		if len(b) < 8 {
			return nil, 0, false
		}
		size, head = int(b[2])<<8|int(b[3]), 4
	case 127:
		return nil, 0, false // 64 KiB or more: never all buffered
	}
	n = head + 4 + size
	if n > len(b) || size > max {
		return nil, 0, false
	}
	mask := b[head : head+4]
	data = b[head+4 : n]
	for i := range data {
		data[i] ^= mask[i&3]
	}
	return data, n, true
}

// allow applies the token bucket: refused messages get one non-fatal
// rate_limited; message_burst more refused ones close the socket. The
// bucket is two fields of the client rather than an x/time/rate.Limiter:
// that one is a separate 80-byte object with a mutex, per idle socket, and
// only the reader touches this bucket.
func (c *client) allow(now time.Time) bool {
	burst := float64(c.h.conf().MessageBurst)
	ns := now.UnixNano()
	c.tokens = min(burst, c.tokens+float64(ns-c.tokensAt)/1e9*c.h.conf().MessagesPerSecond)
	c.tokensAt = ns
	if c.tokens >= 1 {
		c.tokens--
		// Forgive once the bucket has half refilled, so a later burst is
		// warned again before it is cut.
		if c.strikes > 0 && c.tokens >= burst/2 {
			c.strikes = 0
		}
		return true
	}
	c.strikes++
	c.h.metrics.rateLimited.Inc()
	switch {
	case c.strikes == 1:
		c.fail(protoErr(CodeRateLimited, false, "over %g messages per second; messages are being dropped", c.h.conf().MessagesPerSecond))
	case c.strikes > c.h.conf().MessageBurst:
		c.fail(protoErr(CodeRateLimited, true, "still over %g messages per second", c.h.conf().MessagesPerSecond))
	}
	return false
}

func readErrReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		return reasonClosed // 1006 is gorilla's name for an EOF without close frame
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reasonTimeout
	}
	return reasonDropped
}

// inMsgs are the messages handle decodes into: nothing keeps an *inMsg
// past handle (its strings are copies; a payload is copied by relay).
var inMsgs = sync.Pool{New: func() any { return new(inMsg) }}

// handle dispatches one message.
func (c *client) handle(data []byte) {
	h := c.h
	m := inMsgs.Get().(*inMsg)
	defer func() {
		*m = inMsg{} // drops the payload's alias of the read buffer
		inMsgs.Put(m)
	}()
	err := decodeInto(data, m)
	if c.peer == nil {
		if err != nil {
			c.fail(protoErr(CodeHelloRequired, true, "the first message must be a hello (%s)", err.(*ProtocolError).Reason))
			return
		}
		if m.Type != "hello" {
			c.fail(protoErr(CodeHelloRequired, true, "the first message must be a hello, not %s", m.Type))
			return
		}
		h.metrics.message(m.Type)
		if err := h.hello(c, m); err != nil {
			c.fail(asProtocolError(err))
		}
		return
	}
	if err != nil {
		c.fail(err.(*ProtocolError))
		return
	}
	h.metrics.message(m.Type)
	switch m.Type {
	case "hello":
		c.fail(protoErr(CodeAlreadyJoined, false, "already joined room %s", c.peer.room.name))
	case "signal":
		h.relay(c, m)
	case "chat":
		h.chat(c, m)
	case "rename":
		h.rename(c, m)
	case "leave":
		h.leave(c)
	}
}

func asProtocolError(err error) *ProtocolError {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe
	}
	return protoErr("internal", true, "internal error")
}

// readBufs holds the buffers messages are read into: handle copies what it
// keeps (json.Unmarshal copies strings and raw payloads; decodeSignal's
// payload aliases the buffer, and relay copies it into the frame it sends),
// so one buffer serves message after message instead of io.ReadAll's
// growing garbage.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func putReadBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 { // a rare huge message does not pin its buffer
		readBufs.Put(bp)
	}
}

// readFrame appends r's message to buf, up to limit bytes.
func readFrame(buf []byte, r io.Reader, limit int64) ([]byte, error) {
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// emptyPongLen is the size of a client's pong to our empty ping: FIN and
// opcode 0xA, then the mask bit with length 0, then the 4-byte mask.
const emptyPongLen = 6

// isEmptyPong tells whether b starts with a client's empty pong frame.
func isEmptyPong(b []byte) bool {
	return len(b) >= emptyPongLen && b[0] == 0x8A && b[1] == 0x80
}
