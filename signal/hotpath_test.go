package signal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

// FuzzEncodeSignal: the spliced signal is byte for byte what json.Marshal
// makes of the same message, for every payload decode accepts.
func FuzzEncodeSignal(f *testing.F) {
	for _, s := range []string{
		`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}`,
		`{ "description" : { "type" : "offer", "sdp" : "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n" } }`,
		`"a<b>&c"`, `"\u2028"`, "\"\u2028\"", `[1, 2.5e3, true, null, {}]`, `"é"`, "\"\xff\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		m, err := decode([]byte(`{"type":"signal","to":"p1","payload":` + payload + `}`))
		if err != nil {
			return
		}
		for _, from := range []string{"pAbC-_09xy", `p"<\`} {
			want := encode(signalOut{Type: "signal", From: from, Payload: m.Payload})
			if got := encodeSignal(from, m.Payload); !bytes.Equal(got, want) {
				t.Fatalf("encodeSignal(%q, %q)\n got %q\nwant %q", from, m.Payload, got, want)
			}
		}
	})
}

func TestReadFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		limit int64
		want  string
	}{
		{"empty", "", 10, ""},
		{"under the limit", "hello", 10, "hello"},
		{"at the limit", "0123456789", 10, "0123456789"},
		{"over the limit stops there", "0123456789abc", 10, "0123456789"},
		{"larger than the first buffer", strings.Repeat("x", 5000), 1 << 20, strings.Repeat("x", 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// iotest-style one byte reads would hide nothing here: bufio
			// hands out what it has, as gorilla's frame reader does.
			got, err := readFrame(make([]byte, 0, 4), bufio.NewReaderSize(strings.NewReader(tc.in), 16), tc.limit)
			if err != nil || string(got) != tc.want {
				t.Fatalf("readFrame = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("error", func(t *testing.T) {
		if _, err := readFrame(nil, io.MultiReader(strings.NewReader("ab"), errReader{}), 10); err != io.ErrUnexpectedEOF {
			t.Fatalf("err = %v, want the reader's", err)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// TestTakePongs: the empty pongs answering our pings are taken off the
// read buffer; anything else is left for gorilla.
func TestTakePongs(t *testing.T) {
	pong := []byte{0x8A, 0x80, 1, 2, 3, 4}
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	pongWithData := []byte{0x8A, 0x81, 1, 2, 3, 4, 'x'}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name     string
		buffered []byte
		left     []byte
		sawPong  bool
	}{
		{"text", text, text, false},
		{"pong then text", cat(pong, text), text, true},
		{"two pongs", cat(pong, pong), nil, true},
		{"text then pong", cat(text, pong), cat(text, pong), false},
		{"pong with payload is gorilla's", pongWithData, pongWithData, false},
		{"half a pong is gorilla's", pong[:3], pong[:3], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(bytes.NewReader(tc.buffered), 64)
			br.Peek(len(tc.buffered)) // all buffered, as after serve's read
			c := &client{br: br}
			c.takePongs()
			if got := c.lastRead.Load() != 0; got != tc.sawPong {
				t.Fatalf("pong seen = %v, want %v", got, tc.sawPong)
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, tc.left) {
				t.Fatalf("left % x, want % x", rest, tc.left)
			}
		})
	}
}

// TestBackedUpSocketKeepsFrames: frames written directly fill the socket of
// a client that does not read; the rest of a half-written frame and what is
// queued behind it reach it intact and in order once it reads.
func TestBackedUpSocketKeepsFrames(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) {
		c.SendQueue = 1000
		c.MaxMessageBytes = 64 << 10
	})
	a, _ := ts.join(t, "backed", "A")
	b, wb := ts.join(t, "backed", "B")
	a.expect("joined")
	// A small send buffer on the hub's side of B's socket (the kernel
	// would grow it to megabytes), so that what B leaves unread fills it.
	if err := hubSocket(t, ts, wb.ID).(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Error(err)
	}
	const n = 20 // 1 MB: more than B's receive buffer and that send buffer hold
	for i := range n {
		a.send(map[string]any{"type": "signal", "to": wb.ID, "payload": map[string]any{"i": i, "pad": strings.Repeat("x", 50000)}})
	}
	waitFor(t, "a writer blocked on B's full socket", func() bool {
		ts.hub.mu.Lock()
		defer ts.hub.mu.Unlock()
		for c := range ts.hub.clients {
			c.qmu.Lock()
			backed := c.writing && c.peer != nil && c.peer.id == wb.ID
			c.qmu.Unlock()
			if backed {
				return true
			}
		}
		return false
	})
	for i := range n {
		m := b.expect("signal")
		var p struct {
			I   int    `json:"i"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil || p.I != i || len(p.Pad) != 50000 {
			t.Fatalf("signal %d: i=%d len=%d err=%v", i, p.I, len(p.Pad), err)
		}
	}
}

// TestUnansweredCloseIsCut: a client that neither answers our close frame
// nor closes is cut after closeGrace, though its socket waits in the
// poller with no read to put a deadline on.
func TestUnansweredCloseIsCut(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dialWS(t)
	c.send(map[string]any{"type": "hello", "version": 99, "room": "r", "name": "N"})
	// Read raw bytes, so gorilla's client does not answer the close.
	conn := c.ws.NetConn()
	conn.SetReadDeadline(time.Now().Add(closeGrace + 3*time.Second))
	start := time.Now()
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the server did not close the socket: %v", err)
	}
	if d := time.Since(start); d < closeGrace/2 {
		t.Fatalf("closed after %s, before the client had closeGrace to answer", d)
	}
}

// TestClientPingAnswered: a client's ping gets its pong from our writer
// (gorilla's own handler would write from the reader).
func TestClientPingAnswered(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _ := ts.join(t, "ping", "A")
	got := make(chan string, 1)
	c.ws.SetPongHandler(func(s string) error { got <- s; return nil })
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Gorilla's client sees pongs only inside a read: one that ends at the
	// pong's arrival or after a second without a message.
	go func() {
		c.ws.SetReadDeadline(time.Now().Add(time.Second))
		c.ws.ReadMessage()
		close(got)
	}()
	if s, ok := <-got; !ok || s != "are you there" {
		t.Fatalf("pong %q (seen %v)", s, ok)
	}
}

// FuzzDecodeSignal: what the fast path accepts, json.Unmarshal decodes to
// the same message; and the fast path takes the common signal.
func FuzzDecodeSignal(f *testing.F) {
	for _, s := range []string{
		string(benchSignal),
		`{"type":"signal","to":"p1","payload":{"description":{"type":"offer","sdp":"v=0\r\n"}}}`,
		` { "payload" : [1,-2.5e+3,true,false,null,"\u00e9\"\\"] , "to" : "p1" , "type" : "signal" } `,
		`{"type":"signal","to":"p1","payload":null}`, `{"type":"signal","to":"","payload":1}`,
		`{"type":"signal","to":"p1","payload":1,"to":"p2"}`, `{"Type":"signal","to":"p1","payload":1}`,
		`{"type":"signal","to":"p1","payload":01}`, `{"type":"signal","to":"p1","payload":"\x01"}`,
		`{"type":"signal","to":"p1","payload":{"a":1,}}`, `{"type":"signal","to":"p1","payload":1}x`,
		`{"type":"chat","text":"hi"}`, `{"type":"signal","to":"p\u0031","payload":1}`, "{\"type\":\"signal\",\"to\":\"p1\",\"payload\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast := new(inMsg)
		if !decodeSignal(data, fast) {
			return
		}
		var slow inMsg
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast path took %q, json.Unmarshal refuses it: %v", data, err)
		}
		if slow.Type != fast.Type || slow.To != fast.To || !bytes.Equal(slow.Payload, fast.Payload) ||
			slow.Version != nil || slow.Room != "" || slow.Name != "" || slow.Text != "" {
			t.Fatalf("%q: fast %+v, json.Unmarshal %+v", data, *fast, slow)
		}
	})
}

func TestDecodeSignalTakesTheCommonCase(t *testing.T) {
	for _, s := range []string{
		string(benchSignal),
		`{"type":"signal","to":"pAb-_9","payload":{"description":{"type":"answer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"}}}`,
		`{"to":"p1","payload":{"candidate":"","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null},"type":"signal"}`,
	} {
		if !decodeSignal([]byte(s), new(inMsg)) {
			t.Errorf("the fast path refused %s", s)
		}
	}
}

// TestDirectWriteAfterWriterDeadline: the writer goroutine leaves a write
// deadline (writeWait after its last frame) on the socket; once it has
// passed, a direct write must still go out.
func TestDirectWriteAfterWriterDeadline(t *testing.T) {
	ts := newTestServer(t, nil)
	a, _ := ts.join(t, "deadline", "A")
	b, wb := ts.join(t, "deadline", "B")
	a.expect("joined")
	// What the writer left, moved into the past rather than waited for.
	hubSocket(t, ts, wb.ID).SetWriteDeadline(time.Now().Add(-time.Second))
	a.send(map[string]any{"type": "signal", "to": wb.ID, "payload": 1})
	if m := b.expect("signal"); string(m.Payload) != "1" {
		t.Fatalf("got %v", m)
	}
}

func TestDataFrameBuffered(t *testing.T) {
	masked := func(op byte, n int) []byte {
		b := []byte{0x80 | op}
		if n < 126 {
			b = append(b, 0x80|byte(n))
		} else {
			b = append(b, 0x80|126, byte(n>>8), byte(n))
		}
		return append(append(b, 1, 2, 3, 4), bytes.Repeat([]byte{'x'}, n)...)
	}
	text, long := masked(1, 10), masked(1, 200)
	for _, tc := range []struct {
		name string
		buf  []byte
		want bool
	}{
		{"text", text, true},
		{"text and more", append(append([]byte(nil), text...), 0x81), true},
		{"text short a byte", text[:len(text)-1], false},
		{"two-byte length", long, true},
		{"two-byte length, short", long[:100], false},
		{"binary", masked(2, 3), true},
		{"ping", masked(9, 0), false},
		{"close", masked(8, 2), false},
		{"not final", append([]byte{0x01}, text[1:]...), false},
		{"one byte", text[:1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(bytes.NewReader(tc.buf), 512)
			br.Peek(len(tc.buf))
			if got := (&client{br: br}).dataFrameBuffered(); got != tc.want {
				t.Fatalf("dataFrameBuffered = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBufferedText: only a whole, final, masked text frame within the
// limit is taken from the read buffer, unmasked; anything else is left,
// untouched, to gorilla.
func TestBufferedText(t *testing.T) {
	mask := []byte{0x11, 0x22, 0x33, 0x44}
	frame := func(first byte, payload []byte, masked bool) []byte {
		b := []byte{first}
		m := byte(0)
		if masked {
			m = 0x80
		}
		if len(payload) < 126 {
			b = append(b, m|byte(len(payload)))
		} else {
			b = append(b, m|126, byte(len(payload)>>8), byte(len(payload)))
		}
		if masked {
			b = append(b, mask...)
			for i, c := range payload {
				b = append(b, c^mask[i&3])
			}
			return b
		}
		return append(b, payload...)
	}
	short := []byte(`{"type":"leave"}`)
	long := []byte(strings.Repeat("x", 300))
	for _, tc := range []struct {
		name string
		in   []byte
		max  int
		want []byte // nil: not taken
	}{
		{"short text", frame(0x81, short, true), 100, short},
		{"16-bit length", frame(0x81, long, true), 1000, long},
		{"followed by more", append(frame(0x81, short, true), 0x81, 0x80), 100, short},
		{"empty text", frame(0x81, nil, true), 100, []byte{}},
		{"unmasked", frame(0x81, short, false), 100, nil},
		{"binary", frame(0x82, short, true), 100, nil},
		{"not final", frame(0x01, short, true), 100, nil},
		{"reserved bit", frame(0xC1, short, true), 100, nil},
		{"ping", frame(0x89, nil, true), 100, nil},
		{"over the limit", frame(0x81, long, true), 299, nil},
		{"payload not all here", frame(0x81, long, true)[:200], 1000, nil},
		{"header not all here", frame(0x81, long, true)[:3], 1000, nil},
		{"64-bit length", []byte{0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0}, 1 << 20, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := bytes.Clone(tc.in)
			data, n, ok := bufferedText(in, tc.max)
			if tc.want == nil {
				if ok || !bytes.Equal(in, tc.in) {
					t.Fatalf("taken (%v) or changed: %q", ok, in)
				}
				return
			}
			if !ok || !bytes.Equal(data, tc.want) || n != len(frame(0x81, tc.want, true)) {
				t.Fatalf("got %q, %d, %v; want %q", data, n, ok, tc.want)
			}
		})
	}
}

// FuzzBufferedText: a frame bufferedText takes is a final masked text
// frame whose payload, masked again, is the bytes it was given, within the
// buffer and the limit; one it refuses is left untouched.
func FuzzBufferedText(f *testing.F) {
	f.Add([]byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, 100)
	f.Add([]byte{0x81, 0xFE, 0, 2, 0, 0, 0, 0, 'a', 'b'}, 100)
	f.Add([]byte{0x82, 0x80, 1, 2, 3, 4}, 100)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		orig := bytes.Clone(in)
		data, n, ok := bufferedText(in, max)
		if !ok {
			if !bytes.Equal(in, orig) {
				t.Fatalf("refused %q but changed it", orig)
			}
			return
		}
		if n > len(orig) || len(data) > max || orig[0] != 0x81 || orig[1]&0x80 == 0 {
			t.Fatalf("%q: n %d, %d bytes, max %d", orig, n, len(data), max)
		}
		head := n - len(data) - 4
		if size := int(orig[1] & 0x7f); size != len(data) && !(size == 126 && head == 4) {
			t.Fatalf("%q: length %d, payload %d bytes", orig, size, len(data))
		}
		for i, c := range data {
			if c^orig[head+i&3] != orig[head+4+i] {
				t.Fatalf("%q: byte %d unmasked wrong", orig, i)
			}
		}
	})
}

// TestBurstInOneWrite: many frames in one TCP write fill the read buffer
// again and again, some split across reads and some larger than it (taken
// by gorilla), with a ping among them; with edge-triggered events the
// reader must keep reading until the socket is empty, and every message
// arrives, in order.
func TestBurstInOneWrite(t *testing.T) {
	ts := newTestServer(t, func(c *config.Signal) { c.MessagesPerSecond = 1e6; c.MessageBurst = 100000 })
	a, _ := ts.join(t, "burst", "A")
	b, wb := ts.join(t, "burst", "B")
	a.expect("joined")
	mask := [4]byte{7, 1, 3, 9}
	frame := func(op byte, payload []byte) []byte {
		f := []byte{0x80 | op}
		if len(payload) < 126 {
			f = append(f, 0x80|byte(len(payload)))
		} else {
			f = append(f, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
		}
		f = append(f, mask[:]...)
		for i, c := range payload {
			f = append(f, c^mask[i&3])
		}
		return f
	}
	const n = 200
	var burst []byte
	for i := range n {
		pad := strings.Repeat("x", i*7%700) // 0 to 700 bytes: some frames outgrow the 320-byte buffer
		burst = append(burst, frame(1, []byte(`{"type":"signal","to":"`+wb.ID+`","payload":{"i":`+strconv.Itoa(i)+`,"p":"`+pad+`"}}`))...)
		if i == n/2 {
			burst = append(burst, frame(9, nil)...) // a ping: answered through the queue
		}
	}
	a.ws.NetConn().SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.ws.NetConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := b.next()
		var p struct{ I int }
		if err := json.Unmarshal(m.Payload, &p); m.Type != "signal" || err != nil || p.I != i {
			t.Fatalf("message %d: %v %s (%v)", i, m.Type, m.Payload, err)
		}
	}
}

// hubSocket is the hub's side of the socket of the peer with id.
func hubSocket(t testing.TB, ts *testServer, id string) net.Conn {
	t.Helper()
	ts.hub.mu.Lock()
	defer ts.hub.mu.Unlock()
	for c := range ts.hub.clients {
		if c.peer != nil && c.peer.id == id {
			return c.ws.NetConn()
		}
	}
	t.Fatalf("no hub client for peer %s", id)
	return nil
}
