package signal

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// The reader of a socket. An idle socket is most of a hub's sockets, so
// what an idle reader holds is what a connection costs: a goroutine that
// parks inside gorilla's NextReader keeps a stack of 8 KiB (the read path
// is deep, and JSON handling grows the stack, which the runtime then cannot
// shrink below four times what is in use). So on plain TCP the reader takes
// two shapes, one at a time, each handing over to the next:
//
//   - park: a fresh goroutine that waits for the socket to become readable
//     with a shallow stack (2 KiB), answering nothing, reading nothing, and
//     swallowing the pongs of the hub's pings itself;
//   - drain: a fresh goroutine that reads and handles messages with gorilla
//     while bytes are there, then starts a park and ends.
//
// Over TLS (or any conn without a file descriptor) the plain loop reads.
// Either way there is exactly one reader at a time, counted in h.wg; the
// last one tells the hub the socket is gone.

// startReader begins reading c. The caller has done h.wg.Add(1).
func (c *client) startReader() {
	if c.raw != nil {
		go c.park()
	} else {
		go c.readLoop()
	}
}

// park waits for bytes, then hands over to drain.
func (c *client) park() {
	if err := c.waitReadable(); err != nil {
		c.end(readErrReason(err))
		return
	}
	c.h.wg.Add(1) // the successor is counted before this one stops being
	go c.drain()
	c.h.wg.Done()
}

// drain reads messages while the socket has some, then parks again.
func (c *client) drain() {
	for {
		reason, ok := c.readOne()
		if !ok {
			c.end(reason)
			return
		}
		// A closing socket is read to its end here: the close handshake
		// is short, and gorilla may stand mid-message after too_large.
		if !c.closing() && c.br.Buffered() == 0 && !c.readableNow() {
			break
		}
	}
	c.h.wg.Add(1)
	go c.park()
	c.h.wg.Done()
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

// end is the last reader's last act.
func (c *client) end(reason string) {
	defer c.h.wg.Done()
	c.ws.NetConn().Close()
	c.h.disconnect(c, c.endReason(reason))
}

// readOne reads and handles one message; false when the socket is done.
func (c *client) readOne() (reason string, ok bool) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return readErrReason(err), false
	}
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	max := int64(c.h.conf().MaxMessageBytes)
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return readErrReason(err), false
	}
	switch {
	case c.closing():
		// A close is under way: only the handshake matters now.
	case int64(len(data)) > max:
		c.fail(protoErr(CodeTooLarge, true, "message over %d bytes", max))
	case !c.allow(now):
	case mt != websocket.TextMessage:
		c.fail(protoErr(CodeBadMessage, false, "binary frames are not part of the protocol"))
	default:
		c.handle(data)
	}
	return "", true
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

// handle dispatches one message.
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

// emptyPongLen is the size of a client's pong to our empty ping: FIN and
// opcode 0xA, then the mask bit with length 0, then the 4-byte mask.
const emptyPongLen = 6

// isEmptyPong tells whether b starts with a client's empty pong frame.
func isEmptyPong(b []byte) bool {
	return len(b) >= emptyPongLen && b[0] == 0x8A && b[1] == 0x80
}
