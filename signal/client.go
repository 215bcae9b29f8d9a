package signal

import (
	"bufio"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// writeWait bounds one write; a client that cannot take a frame in that
	// time is gone.
	writeWait = 10 * time.Second
	// closeGrace is how long the reader waits for the client's answer to
	// our close frame before giving up on a clean close.
	closeGrace = 2 * time.Second
	// helloTimeout: a socket that has not joined by then is closed, so idle
	// sockets cannot hold [signal] max_connections_per_ip slots forever.
	helloTimeout = 10 * time.Second
	// readBufferSize is per connection and held while idle: it only has to
	// hold frame headers, since large payloads are read straight into the
	// message buffer (bufio skips its buffer for large reads). Gorilla takes
	// a hijacked reader only above 256 bytes; 320 still takes a typical ICE
	// candidate message in one read.
	readBufferSize = 320
	// The reader (serve) relies on gorilla reading through our buffer,
	// which it does only above 256 bytes: this fails to compile below.
	_ = uint(readBufferSize - 257)
	// writeBufferSize is a pooled buffer, held only while a frame is written.
	writeBufferSize = 4096
)

// Reasons a connection ends: the disconnects metric's label. Fatal
// protocol errors use their code.
const (
	reasonLeft     = "left"         // it sent leave
	reasonClosed   = "closed"       // it closed the socket
	reasonDropped  = "dropped"      // the socket broke (or DropSockets)
	reasonTimeout  = "ping_timeout" // no pong in time
	reasonReplaced = "replaced"     // a resume took its peer over
	reasonShutdown = "shutdown"
)

// resumable tells whether a peer whose socket ended for reason keeps its
// place for [signal] resume_window.
func resumable(reason string) bool {
	switch reason {
	case reasonClosed, reasonDropped, reasonTimeout, CodeSlowConsumer:
		return true
	}
	return false
}

type frameKind uint8

const (
	frameText frameKind = iota
	framePing
	framePong
	frameClose
	frameRaw // the rest of a frame a direct write left half written
)

// frame is one queued write. For frameClose, code and text are the close
// frame's; for framePong, data is the ping's.
type frame struct {
	kind frameKind
	code int
	data []byte
	text string
}

// client is one WebSocket. Its memory while idle is the design budget
// (issue 3: under 6 KiB per idle connection), hence no channels, timers or
// goroutines beyond the reader: the writer exists only while there is
// something to write.
type client struct {
	// static after construction
	h    *Hub
	ws   *websocket.Conn
	br   *bufio.Reader   // gorilla's read buffer, ours so the reader can see it is empty
	raw  syscall.RawConn // non-nil: the socket is polled (plain TCP on Linux)
	ip   string
	born int64 // Unix ns

	// pollState says which goroutine is the reader of a polled socket
	// (claim, release); sr is the reader's.
	pollState atomic.Int32
	sr        sockReader
	dwell     dwellMark // empty unless built with the signaldwell tag

	// owned by the reader goroutine
	tokens   float64 // token bucket of [signal] messages_per_second and message_burst
	tokensAt int64   // Unix ns of the last refill
	strikes  int     // messages refused by the bucket since it last recovered

	// peer is written by the reader under h.mu; others read it under h.mu.
	peer *peer

	// lastRead is the Unix ns of the last frame read, pong included:
	// stored by the reader, loaded by the sweeper.
	lastRead atomic.Int64

	// owned by the sweeper
	nextPing int64

	qmu sync.Mutex
	// guarded by qmu
	queue    []frame
	writing  bool   // a writer goroutine or a direct write runs; never more than one
	handling bool   // the reader is in handle: it writes what is queued when done (handleMessage)
	closed   bool   // nothing more may be queued (close frame queued, or the socket is gone)
	reason   string // why the connection ends; the first one set wins
}

func newClient(h *Hub, ws *websocket.Conn, br *bufio.Reader, ip string) *client {
	now := time.Now().UnixNano()
	c := &client{
		h:        h,
		ws:       ws,
		br:       br,
		ip:       ip,
		born:     now,
		tokens:   float64(h.conf().MessageBurst),
		tokensAt: now,
	}
	c.raw = rawConn(ws.NetConn())
	c.lastRead.Store(now)
	ws.SetPongHandler(func(string) error {
		c.lastRead.Store(time.Now().UnixNano())
		return nil
	})
	// Gorilla's own handlers would write from the reader; every write is
	// ours to order instead, because a direct write (push) may leave half a
	// frame for the writer to finish.
	ws.SetPingHandler(func(data string) error {
		c.push(frame{kind: framePong, data: []byte(data)}, false)
		return nil
	})
	ws.SetCloseHandler(func(code int, _ string) error {
		c.echoClose(code)
		return nil
	})
	return c
}

// send queues a text message; false when it was not queued because the
// client is closing. It never blocks: a full queue ends the client as a
// slow consumer, which its resume repairs.
func (c *client) send(b []byte) bool {
	return c.push(frame{kind: frameText, data: b}, false)
}

// sendDirect is send, writing the frame at once when nothing is queued: the
// relay's hot path. b is only borrowed: what has to wait in the queue is
// copied. Its callers hold no lock wider than a room's: a write under the
// hub's lock would stall every join whenever the writing thread lost its
// CPU to another process.
func (c *client) sendDirect(b []byte) bool {
	return c.push(frame{kind: frameText, data: b}, true)
}

func (c *client) push(f frame, direct bool) bool {
	c.qmu.Lock()
	if c.closed {
		c.qmu.Unlock()
		return false
	}
	if len(c.queue) >= c.h.conf().SendQueue {
		// What it has not read is dropped: it resumes and resynchronises.
		e := protoErr(CodeSlowConsumer, true, "the client did not read its messages fast enough; resume to catch up")
		c.queue = append(c.queue[:0], frame{kind: frameText, data: encodeError(e)}, closeFrame(e))
		c.endLocked(CodeSlowConsumer)
		c.startWriterLocked()
		c.qmu.Unlock()
		return false
	}
	if direct && len(c.queue) == 0 && c.directLocked(f.kind) {
		// The common case, with no queue to allocate.
		c.writeDirectLocked(&f)
		c.startWriterLocked()
		c.qmu.Unlock()
		return true
	}
	if direct && f.data != nil {
		f.data = append([]byte(nil), f.data...) // borrowed: the queue keeps it
	}
	c.queue = append(c.queue, f)
	if f.kind == frameClose {
		c.endLocked("") // the reason is set by whoever queued it
	}
	if direct {
		c.flushDirectLocked()
	} else {
		c.startWriterLocked()
	}
	c.qmu.Unlock()
	return true
}

// directLocked tells whether a frame of kind may be written now by the
// caller: text and ping frames, on a polled socket, while no writer runs
// and no handle holds the client's writes back.
func (c *client) directLocked(kind frameKind) bool {
	return c.raw != nil && !c.writing && !c.handling && (kind == frameText || kind == framePing)
}

// flushDirectLocked writes queued text and ping frames itself, each in one
// non-blocking system call, while no writer runs: most often all of them go
// out whole, which spares the writer goroutine and its wake-up. What does
// not fit (the socket's buffer is full), or any other kind of frame, is
// left to a writer goroutine.
func (c *client) flushDirectLocked() {
	for len(c.queue) > 0 && c.directLocked(c.queue[0].kind) {
		f := c.queue[0]
		c.queue = c.queue[1:]
		if !c.writeDirectLocked(&f) {
			break
		}
	}
	if len(c.queue) == 0 {
		c.queue = nil // do not keep a drained backing array on an idle client
	}
	c.startWriterLocked()
}

// writeDirectLocked writes f in one non-blocking system call; false when it
// did not all go out: the rest is queued first for the writer, or the
// socket failed. Holding writing makes this the only write under way; qmu
// is released around the write.
func (c *client) writeDirectLocked(f *frame) bool {
	c.writing = true
	c.qmu.Unlock()
	rest, err := c.writeDirect(f)
	c.qmu.Lock()
	c.writing = false
	if err != nil {
		c.endLocked(reasonDropped)
		c.queue = nil
		shutdownSocket(c.raw)
		return false
	}
	if len(rest) > 0 {
		// The writer finishes the frame first, then the rest.
		c.queue = append([]frame{{kind: frameRaw, data: rest}}, c.queue...)
		return false
	}
	return true
}

// handleMessage runs handle with the client's writes held back: what it
// answers (a welcome, an error) is written directly once it returns, after
// the hub's and rooms' locks are released.
func (c *client) handleMessage(data []byte) {
	c.qmu.Lock()
	c.handling = true
	c.qmu.Unlock()
	c.handle(data)
	c.qmu.Lock()
	c.handling = false
	c.flushDirectLocked()
	c.qmu.Unlock()
}

// writeBufs hold a frame's header and payload for one direct write.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeDirect writes f in one non-blocking system call and returns what
// did not fit (a copy). Server frames are unmasked: FIN and opcode, the
// length, the payload (RFC 6455 section 5.2).
func (c *client) writeDirect(f *frame) (rest []byte, err error) {
	bp := writeBufs.Get().(*[]byte)
	b := (*bp)[:0]
	switch f.kind {
	case framePing:
		b = append(b, 0x89, 0)
	default:
		b = append(b, 0x81)
		switch n := len(f.data); {
		case n < 126:
			b = append(b, byte(n))
		case n <= 0xFFFF:
			b = append(b, 126, byte(n>>8), byte(n))
		default:
			b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		}
		b = append(b, f.data...)
	}
	n, err := writeSocket(c.raw, b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The writer goroutine's deadline, passed since: a raw write fails
		// on it before trying, and this one cannot wait anyway.
		c.ws.NetConn().SetWriteDeadline(time.Time{})
		n, err = writeSocket(c.raw, b)
	}
	if err == nil && n < len(b) {
		rest = append([]byte(nil), b[n:]...)
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
	return rest, err
}

// echoClose answers a client's close frame, as gorilla's default handler
// does, unless a writer is under way (it may stand mid-frame): then the
// socket closes without the echo.
func (c *client) echoClose(code int) {
	c.qmu.Lock()
	if c.writing {
		c.qmu.Unlock()
		return
	}
	c.writing = true
	c.qmu.Unlock()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(writeWait))
	c.qmu.Lock()
	c.writing = false
	c.startWriterLocked()
	c.qmu.Unlock()
}

func closeFrame(e *ProtocolError) frame {
	return frame{kind: frameClose, code: e.CloseCode(), text: e.Reason}
}

// fail sends a protocol error; a fatal one is followed by the close frame,
// and the reader then only waits for the close handshake.
func (c *client) fail(e *ProtocolError) {
	if !e.Fatal {
		c.send(encodeError(e))
		return
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return
	}
	c.queue = append(c.queue, frame{kind: frameText, data: encodeError(e)}, closeFrame(e))
	c.endLocked(e.Code)
	c.startWriterLocked()
}

// closeWith queues a close frame after whatever is queued.
func (c *client) closeWith(reason string, code int, text string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return
	}
	c.queue = append(c.queue, frame{kind: frameClose, code: code, text: text})
	c.endLocked(reason)
	c.startWriterLocked()
}

func (c *client) endLocked(reason string) {
	c.closed = true
	if c.reason == "" && reason != "" {
		c.reason = reason
	}
}

// abort closes the socket at once, without a close frame, as a network
// failure would: the reader and any writer fail and end.
func (c *client) abort(reason string) {
	c.qmu.Lock()
	c.endLocked(reason)
	c.queue = nil
	c.qmu.Unlock()
	if c.raw != nil {
		// A polled socket is closed by its reader only (so its descriptor
		// is never reused under the poller): shut it down, which fails a
		// running reader or writer and wakes a parked socket's.
		shutdownSocket(c.raw)
		return
	}
	c.ws.NetConn().Close()
}

func (c *client) closing() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.closed
}

func (c *client) endReason(fallback string) string {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.endLocked(fallback)
	c.queue = nil
	return c.reason
}

func (c *client) startWriterLocked() {
	if c.writing || c.handling || len(c.queue) == 0 {
		return
	}
	c.writing = true
	c.h.wg.Add(1)
	go c.writeLoop()
}

// writeLoop is the only goroutine that writes data frames; it runs while
// the queue is not empty and ends when it drains.
func (c *client) writeLoop() {
	defer c.h.wg.Done()
	for {
		c.qmu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			c.writing = false
			c.qmu.Unlock()
			return
		}
		c.qmu.Unlock()
		for i := range batch {
			if err := c.write(&batch[i]); err != nil {
				// Broken or too slow: close the socket so the reader ends.
				c.abort(reasonDropped)
				c.qmu.Lock()
				c.writing = false
				c.qmu.Unlock()
				return
			}
		}
	}
}

func (c *client) write(f *frame) error {
	deadline := time.Now().Add(writeWait)
	switch f.kind {
	case framePing:
		return c.ws.WriteControl(websocket.PingMessage, nil, deadline)
	case framePong:
		return c.ws.WriteControl(websocket.PongMessage, f.data, deadline)
	case frameRaw:
		conn := c.ws.NetConn()
		if err := conn.SetWriteDeadline(deadline); err != nil {
			return err
		}
		_, err := conn.Write(f.data)
		return err
	case frameClose:
		text := f.text
		if len(text) > 120 { // a close frame's reason has 123 bytes
			text = text[:120]
		}
		err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(f.code, text), deadline)
		// Give the client closeGrace to answer, then the reader ends anyway
		// (a parked socket has no read to put a deadline on).
		time.AfterFunc(closeGrace, func() { c.abort(reasonTimeout) })
		return err
	default:
		if err := c.ws.SetWriteDeadline(deadline); err != nil {
			return err
		}
		return c.ws.WriteMessage(websocket.TextMessage, f.data)
	}
}
