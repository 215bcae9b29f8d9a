package cluster

// TURN quotas across nodes: each node announces how many allocations each
// user holds on it (an event per change, the whole map in its state), and
// a node's quota check adds the other live nodes' counts to its own. Like
// the room limits, it is exact to within the allocations in flight.

// RemoteAllocations is the allocations user holds on the other live nodes:
// turnserver.Options.RemoteAllocations.
func (n *Node) RemoteAllocations(user string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	sum := 0
	for _, ns := range n.v.nodes {
		if !ns.dead {
			sum += ns.turn[user]
		}
	}
	return sum
}

// LocalAllocations tells the cluster that user now holds count allocations
// on this node: turnserver.Options.OnAllocations.
func (n *Node) LocalAllocations(user string, count int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.turnLocal[user] == count || !validName(user, maxIDLen) {
		// A user id the wire refuses is counted on this node only.
		return
	}
	setCount(n.turnLocal, user, count)
	if n.nc != nil {
		n.publishLocked(wireEvent{Type: evTURN, User: user, N: count})
	}
}
