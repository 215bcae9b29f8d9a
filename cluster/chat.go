package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callbox/callbox/signal"
)

// chatAge bounds how long the stream keeps a room's chat that nobody
// purged (the node that saw the room empty died first).
const chatAge = 24 * time.Hour

// chatState is this node's copy of the recent chat of the rooms it serves:
// loaded from the stream when the room gets its first local peer, then fed
// by the node's consumer. Its lock is a leaf.
type chatState struct {
	max int

	mu    sync.Mutex
	rooms map[string]*roomChat // guarded by mu
}

type roomChat struct {
	loaded chan struct{} // closed once the stream's history is in
	msgs   []signal.Chat // guarded by chatState.mu: by seq, at most max
	used   time.Time     // guarded by chatState.mu
}

func newChatState(max int) *chatState {
	return &chatState{max: max, rooms: make(map[string]*roomChat)}
}

// ensure makes room's chat ready: the first caller loads it, the others
// wait for that, bounded by ctx.
func (s *chatState) ensure(ctx context.Context, n *Node, room string) {
	s.mu.Lock()
	rc := s.rooms[room]
	if rc != nil {
		rc.used = time.Now()
		s.mu.Unlock()
		select {
		case <-rc.loaded:
		case <-ctx.Done():
		}
		return
	}
	rc = &roomChat{loaded: make(chan struct{}), used: time.Now()}
	s.rooms[room] = rc
	s.mu.Unlock()
	defer close(rc.loaded)

	msgs, err := n.loadChat(ctx, room)
	if err != nil {
		n.log.Warn("cluster: chat history not loaded", "room", room, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range msgs {
		s.addLocked(rc, c)
	}
}

// add records a chat of the live feed for a room this node serves.
func (s *chatState) add(room string, c signal.Chat) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc := s.rooms[room]; rc != nil {
		s.addLocked(rc, c)
	}
}

func (s *chatState) addLocked(rc *roomChat, c signal.Chat) {
	i, found := slices.BinarySearchFunc(rc.msgs, c.Seq, func(m signal.Chat, seq int64) int {
		switch {
		case m.Seq < seq:
			return -1
		case m.Seq > seq:
			return 1
		}
		return 0
	})
	if found {
		return
	}
	rc.msgs = slices.Insert(rc.msgs, i, c)
	if len(rc.msgs) > s.max {
		rc.msgs = slices.Delete(rc.msgs, 0, len(rc.msgs)-s.max)
	}
}

func (s *chatState) history(room string) []signal.Chat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc := s.rooms[room]; rc != nil {
		return slices.Clone(rc.msgs)
	}
	return nil
}

func (s *chatState) forget(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rc := s.rooms[room]; rc != nil {
		rc.msgs = nil
	}
}

// prune forgets rooms without local peers for idleInterest.
func (s *chatState) prune(local map[string]bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for room, rc := range s.rooms {
		if local[room] {
			rc.used = now
		} else if now.Sub(rc.used) > idleInterest {
			delete(s.rooms, room)
		}
	}
}

// loadChat reads the room's kept chat from the stream, oldest first.
func (n *Node) loadChat(ctx context.Context, room string) ([]signal.Chat, error) {
	subj := subjChat + room
	st, err := n.js.Stream(ctx, chatStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, err
	}
	count := info.State.Subjects[subj]
	if count == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	batch, err := cons.Fetch(int(min(count, uint64(n.history))), jetstream.FetchMaxWait(requestTimeout))
	if err != nil {
		return nil, err
	}
	var out []signal.Chat
	for msg := range batch.Messages() {
		if c, ok := n.chatOf(msg); ok {
			out = append(out, c)
		}
	}
	return out, batch.Error()
}

func (n *Node) chatOf(msg jetstream.Msg) (signal.Chat, bool) {
	meta, err := msg.Metadata()
	if err != nil {
		return signal.Chat{}, false
	}
	_, wc, err := parseChat(msg.Subject(), msg.Data())
	if err != nil {
		n.metrics.malformed.Inc()
		return signal.Chat{}, false
	}
	return signal.Chat{Seq: chatSeqOf(meta.Sequence.Stream), From: wc.From, Name: wc.Name, Time: wc.Time, Text: wc.Text}, true
}

// seqShift makes room for the chats a node stamps alone while NATS is
// away: the chat seq of stream message S is S<<seqShift, and a node cut
// off stamps last+1, last+2, … which stay below the next stream message's
// seq. Seqs stay unique and increasing for every client (it drops a seq it
// has seen), at the price of gaps; JavaScript numbers hold them exactly up
// to stream sequence 2^37.
const seqShift = 16

func chatSeqOf(streamSeq uint64) int64 { return int64(streamSeq << seqShift) }

// chatLoop puts the chat stream and this node's consumer of it in place,
// retrying while NATS or JetStream is not there, and builds the consumer
// again after an outage (nats.go's ordered consumer ends for good on some
// server errors, such as a server shutting down), from the message after
// the last one it delivered, so nothing stored is missed.
func (n *Node) chatLoop(ctx context.Context) {
	defer n.wg.Done()
	var next uint64 // 0: the stream's next message
	for {
		if seen := n.chatSeq.Load(); seen > 0 {
			next = seen + 1
		}
		cc, start, err := n.setupChat(ctx, next)
		if err != nil {
			n.log.Debug("cluster: chat stream not ready; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		next = start
		n.log.Debug("cluster: chat consumer started", "seq", start)
		if !n.ready.Swap(true) {
			n.log.Info("cluster: chat stream ready")
		}
		select {
		case <-ctx.Done():
			n.ready.Store(false)
			cc.Stop()
			return
		case <-n.rechat:
			cc.Stop()
		}
		// Not in a tight loop when errors come in a storm.
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// nudgeChat asks chatLoop to build the consumer again.
func (n *Node) nudgeChat() {
	select {
	case n.rechat <- struct{}{}:
	default:
	}
}

// setupChat creates or updates the stream and starts a consumer of every
// room's chat at sequence next (0: the stream's next). It returns the
// sequence it started at.
func (n *Node) setupChat(ctx context.Context, next uint64) (jetstream.ConsumeContext, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := n.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              chatStream,
		Subjects:          []string{subjChat + ">"},
		MaxMsgsPerSubject: int64(n.history),
		MaxAge:            chatAge,
		Storage:           jetstream.FileStorage,
		Replicas:          n.cfg.Replicas,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return nil, 0, err
	}
	if next == 0 {
		next = st.CachedInfo().State.LastSeq + 1
	}
	// By number rather than "new": the ordered consumer, recreated after
	// a hiccup, starts again from this number if nothing came before.
	cons, err := n.js.OrderedConsumer(ctx, chatStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjChat + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    next,
	})
	if err != nil {
		return nil, 0, err
	}
	errs := jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		n.log.Debug("cluster: chat consumer", "err", err)
		if errors.Is(err, jetstream.ErrServerShutdown) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			n.nudgeChat()
		}
	})
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		c, ok := n.chatOf(msg)
		if !ok {
			return
		}
		n.chatSeq.Store(uint64(c.Seq) >> seqShift)
		room := msg.Subject()[len(subjChat):]
		n.chat.add(room, c)
		n.hub.DeliverChat(room, c)
	}, errs)
	return cc, next, err
}

// purgeLocked drops the chat of a room that has emptied, as one process
// forgets a room with its last peer. Caller holds n.mu.
func (n *Node) purgeLocked(room string) {
	n.chat.forget(room)
	if !n.ready.Load() || n.closed {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		st, err := n.js.Stream(ctx, chatStream)
		if err == nil {
			err = st.Purge(ctx, jetstream.WithPurgeSubject(subjChat+room))
		}
		if err != nil {
			n.log.Debug("cluster: chat purge failed", "room", room, "err", err)
		}
	}()
}
