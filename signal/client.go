package signal

import (
	"bufio"
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
	// The parked reader relies on gorilla reading through our buffer,
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
	frameClose
)

// frame is one queued write. For frameClose, code and text are the close
// frame's.
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
	raw  syscall.RawConn // nil: the reader cannot park (TLS)
	ip   string
	born int64 // Unix ns

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
	queue   []frame
	writing bool   // a writer goroutine runs; there is never more than one
	closed  bool   // nothing more may be queued (close frame queued, or the socket is gone)
	reason  string // why the connection ends; the first one set wins
}

func newClient(h *Hub, ws *websocket.Conn, br *bufio.Reader, ip string) *client {
	now := time.Now().UnixNano()
	c := &client{
		h:        h,
		ws:       ws,
		br:       br,
		raw:      rawConn(ws.NetConn()),
		ip:       ip,
		born:     now,
		tokens:   float64(h.conf().MessageBurst),
		tokensAt: now,
	}
	c.lastRead.Store(now)
	ws.SetPongHandler(func(string) error {
		c.lastRead.Store(time.Now().UnixNano())
		return nil
	})
	return c
}

// send queues a text message; false when it was not queued because the
// client is closing. It never blocks: a full queue ends the client as a
// slow consumer, which its resume repairs.
func (c *client) send(b []byte) bool {
	return c.push(frame{kind: frameText, data: b})
}

func (c *client) push(f frame) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return false
	}
	if len(c.queue) >= c.h.conf().SendQueue {
		// What it has not read is dropped: it resumes and resynchronises.
		e := protoErr(CodeSlowConsumer, true, "the client did not read its messages fast enough; resume to catch up")
		c.queue = append(c.queue[:0], frame{kind: frameText, data: encodeError(e)}, closeFrame(e))
		c.endLocked(CodeSlowConsumer)
		c.startWriterLocked()
		return false
	}
	c.queue = append(c.queue, f)
	if f.kind == frameClose {
		c.closed = true
	}
	c.startWriterLocked()
	return true
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
	if c.reason == "" {
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
	if c.writing || len(c.queue) == 0 {
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
	case frameClose:
		text := f.text
		if len(text) > 120 { // a close frame's reason has 123 bytes
			text = text[:120]
		}
		err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(f.code, text), deadline)
		// Give the client closeGrace to answer, then the reader ends anyway.
		c.ws.NetConn().SetReadDeadline(time.Now().Add(closeGrace))
		return err
	default:
		if err := c.ws.SetWriteDeadline(deadline); err != nil {
			return err
		}
		return c.ws.WriteMessage(websocket.TextMessage, f.data)
	}
}
