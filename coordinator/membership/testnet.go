package membership

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestNetwork is an in-memory gossip network for in-process clusters, with fault injection.
// memberlist.MockNetwork cannot lose packets: a probe to a crashed node blocks forever on an
// unbuffered channel, so a crash is never detected. TestNetwork drops packets to unreachable or
// shut-down nodes the way UDP would, and refuses stream dials, so memberlist's failure detector
// behaves as on a real network.
type TestNetwork struct {
	mu     sync.Mutex
	byAddr map[string]*TestTransport
	byName map[string]*TestTransport
	cut    map[[2]string]bool // unordered pairs of names that cannot talk
	port   int
}

// NewTestNetwork returns an empty network.
func NewTestNetwork() *TestNetwork {
	return &TestNetwork{byAddr: map[string]*TestTransport{}, byName: map[string]*TestTransport{}, cut: map[[2]string]bool{}}
}

// NewTransport adds a node named name.
func (n *TestNetwork) NewTransport(name string) *TestTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port++
	t := &TestTransport{
		net:      n,
		name:     name,
		addr:     "127.0.0.1:" + strconv.Itoa(20000+n.port),
		packetCh: make(chan *memberlist.Packet, 1024),
		streamCh: make(chan net.Conn, 64),
		shutdown: make(chan struct{}),
	}
	n.byAddr[t.addr] = t
	n.byName[name] = t
	return t
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Partition cuts every link between a node in side and a node not in side.
func (n *TestNetwork) Partition(side ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	in := map[string]bool{}
	for _, s := range side {
		in[s] = true
	}
	for a := range n.byName {
		for b := range n.byName {
			if in[a] != in[b] {
				n.cut[pair(a, b)] = true
			}
		}
	}
}

// Heal restores every link.
func (n *TestNetwork) Heal() {
	n.mu.Lock()
	clear(n.cut)
	n.mu.Unlock()
}

func (n *TestNetwork) route(from *TestTransport, a memberlist.Address) (*TestTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	dest, ok := n.byName[a.Name]
	if !ok {
		dest, ok = n.byAddr[a.Addr]
	}
	if !ok {
		return nil, fmt.Errorf("membership: test network: no route to %s", a)
	}
	if n.cut[pair(from.name, dest.name)] {
		return nil, fmt.Errorf("membership: test network: %s partitioned from %s", from.name, dest.name)
	}
	return dest, nil
}

// TestTransport is one node's endpoint on a TestNetwork.
type TestTransport struct {
	net      *TestNetwork
	name     string
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	shutdown chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*TestTransport)(nil)

type testAddr string

func (a testAddr) Network() string { return "test" }
func (a testAddr) String() string  { return string(a) }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *TestTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	p, _ := strconv.Atoi(port)
	return net.ParseIP(host), p, nil
}

// WriteTo implements memberlist.Transport.
func (t *TestTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress delivers a packet, or silently drops it like UDP when the peer is unreachable.
func (t *TestTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest, err := t.net.route(t, a)
	if err != nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: bytes.Clone(b), From: testAddr(t.addr), Timestamp: now}
	select {
	case <-dest.shutdown:
	case dest.packetCh <- p:
	default: // receiver overloaded: drop, as a full socket buffer would
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *TestTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// IngestPacket implements memberlist.IngestionAwareTransport.
func (t *TestTransport) IngestPacket(conn net.Conn, addr net.Addr, now time.Time, shouldClose bool) error {
	if shouldClose {
		defer conn.Close()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("membership: test network: read packet: %w", err)
	}
	select {
	case t.packetCh <- &memberlist.Packet{Buf: b, From: addr, Timestamp: now}:
	case <-t.shutdown:
	}
	return nil
}

// DialTimeout implements memberlist.Transport.
func (t *TestTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens an in-memory stream, failing when the peer is unreachable.
func (t *TestTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest, err := t.net.route(t, a)
	if err != nil {
		return nil, err
	}
	p1, p2 := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streamCh <- p1:
		return p2, nil
	case <-dest.shutdown:
	case <-timer.C:
	}
	p1.Close()
	p2.Close()
	return nil, fmt.Errorf("membership: test network: dial %s: unreachable", a)
}

// StreamCh implements memberlist.Transport.
func (t *TestTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// IngestStream implements memberlist.IngestionAwareTransport.
func (t *TestTransport) IngestStream(conn net.Conn) error {
	select {
	case t.streamCh <- conn:
		return nil
	case <-t.shutdown:
		conn.Close()
		return fmt.Errorf("membership: test network: %s is shut down", t.name)
	}
}

// Shutdown implements memberlist.Transport; after it, the node is unreachable.
func (t *TestTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.shutdown)
		t.net.mu.Lock()
		delete(t.net.byAddr, t.addr)
		delete(t.net.byName, t.name)
		t.net.mu.Unlock()
	})
	return nil
}
