package coordinator

import (
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// placeCache remembers recent placements by idempotency key, so a client that retries after a lost
// reply gets the same placement (same transfer id) instead of a second one. It is leader-local
// and cleared when leadership changes: a retry that reaches a new leader gets a new placement
// with a higher term, and the old one is fenced by its term.
type placeCache struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*pb.Placement
	order []string // ring of keys in insertion order
	next  int
}

func newPlaceCache(max int) *placeCache {
	return &placeCache{max: max, byKey: make(map[string]*pb.Placement, max)}
}

func (c *placeCache) get(key string) (*pb.Placement, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	return proto.Clone(p).(*pb.Placement), true
}

// put stores p under key unless key is already present, returning the stored placement: when two
// identical requests race, both callers get the first one's result.
func (c *placeCache) put(key string, p *pb.Placement) *pb.Placement {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byKey[key]; ok {
		return proto.Clone(old).(*pb.Placement)
	}
	if len(c.order) < c.max {
		c.order = append(c.order, key)
	} else {
		delete(c.byKey, c.order[c.next])
		c.order[c.next] = key
		c.next = (c.next + 1) % c.max
	}
	c.byKey[key] = proto.Clone(p).(*pb.Placement)
	return p
}

func (c *placeCache) reset() {
	c.mu.Lock()
	clear(c.byKey)
	c.order = c.order[:0]
	c.next = 0
	c.mu.Unlock()
}
