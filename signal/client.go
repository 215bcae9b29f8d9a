package signal

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
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
	// message buffer (bufio skips its buffer for large reads).
	readBufferSize = 512
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
	ip   string
	born int64 // Unix ns

	// owned by the reader goroutine
	limiter *rate.Limiter
	strikes int // messages refused by the limiter since it last recovered

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

func newClient(h *Hub, ws *websocket.Conn, ip string) *client {
	now := time.Now().UnixNano()
	c := &client{
		h:       h,
		ws:      ws,
		ip:      ip,
		born:    now,
		limiter: rate.NewLimiter(rate.Limit(h.cfg.MessagesPerSecond), h.cfg.MessageBurst),
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
	if len(c.queue) >= c.h.cfg.SendQueue {
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

// readLoop is the reader goroutine: it reads and handles every message of
// this socket, then tells the hub the socket is gone.
func (c *client) readLoop() {
	defer c.h.wg.Done()
	reason := c.read()
	c.ws.NetConn().Close()
	c.h.disconnect(c, c.endReason(reason))
}

func (c *client) read() string {
	max := int64(c.h.cfg.MaxMessageBytes)
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			return readErrReason(err)
		}
		now := time.Now()
		c.lastRead.Store(now.UnixNano())
		data, err := io.ReadAll(io.LimitReader(r, max+1))
		if err != nil {
			return readErrReason(err)
		}
		if c.closing() {
			continue // a close is under way: only the handshake matters now
		}
		if int64(len(data)) > max {
			c.fail(protoErr(CodeTooLarge, true, "message over %d bytes", max))
			continue
		}
		if !c.allow(now) {
			continue
		}
		if mt != websocket.TextMessage {
			c.fail(protoErr(CodeBadMessage, false, "binary frames are not part of the protocol"))
			continue
		}
		c.handle(data)
	}
}

// allow applies the token bucket: refused messages get one non-fatal
// rate_limited; message_burst more refused ones close the socket.
func (c *client) allow(now time.Time) bool {
	if c.limiter.AllowN(now, 1) {
		// Forgive once the bucket has half refilled, so a later burst is
		// warned again before it is cut.
		if c.strikes > 0 && c.limiter.TokensAt(now) >= float64(c.h.cfg.MessageBurst)/2 {
			c.strikes = 0
		}
		return true
	}
	c.strikes++
	c.h.metrics.rateLimited.Inc()
	switch {
	case c.strikes == 1:
		c.fail(protoErr(CodeRateLimited, false, "over %g messages per second; messages are being dropped", c.h.cfg.MessagesPerSecond))
	case c.strikes > c.h.cfg.MessageBurst:
		c.fail(protoErr(CodeRateLimited, true, "still over %g messages per second", c.h.cfg.MessagesPerSecond))
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

// handle dispatches one decoded message.
func (c *client) handle(data []byte) {
	h := c.h
	m, err := decode(data)
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
