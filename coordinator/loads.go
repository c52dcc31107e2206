package coordinator

import (
	"sync"
	"time"

	"github.com/tandemserve/tandem/coordinator/placement"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// loadEntry is the leader's soft view of one worker.
type loadEntry struct {
	load     placement.Load
	inFlight int
	prefix   placement.HashSet
	reported time.Time // zero until the first report
	// firstSeen is when this leader first considered the node; it gives a freshly elected leader
	// or a freshly registered worker LoadTTL of grace before the first report.
	firstSeen time.Time
	// Charges for placements made since the last report, so a burst between two reports spreads
	// instead of piling onto the worker that looked idlest at the last report.
	chargedQueue  int
	chargedBlocks int
	suspectUntil  time.Time
}

// loads holds every worker's latest report. Safe for concurrent use.
type loads struct {
	mu      sync.Mutex
	clock   Clock
	ttl     time.Duration
	entries map[string]*loadEntry
}

func newLoads(clock Clock, ttl time.Duration) *loads {
	return &loads{clock: clock, ttl: ttl, entries: map[string]*loadEntry{}}
}

// reset forgets everything (a new leadership starts from fresh reports).
func (l *loads) reset() {
	l.mu.Lock()
	clear(l.entries)
	l.mu.Unlock()
}

func (l *loads) entryLocked(id string, now time.Time) *loadEntry {
	e, ok := l.entries[id]
	if !ok {
		e = &loadEntry{firstSeen: now}
		l.entries[id] = e
	}
	return e
}

// report stores a worker's report and clears the charges it now accounts for.
func (l *loads) report(r *pb.Load) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entryLocked(r.GetNodeId(), now)
	e.load = placement.Load{
		QueueDepth:    int(r.GetQueueDepth()),
		Running:       int(r.GetRunning()),
		Waiting:       int(r.GetWaiting()),
		FreeKVBlocks:  int(r.GetFreeKvBlocks()),
		TotalKVBlocks: int(r.GetTotalKvBlocks()),
		BlockTokens:   int(r.GetBlockTokens()),
		TokensPerSec:  r.GetTokensPerSec(),
	}
	e.inFlight = int(r.GetInFlight())
	e.prefix = placement.NewHashSet(r.GetPrefixHashes())
	e.reported = now
	e.chargedQueue, e.chargedBlocks = 0, 0
	// A worker that reports is evidently alive and working: clear any client-reported suspicion.
	e.suspectUntil = time.Time{}
}

// suspect skips id for d unless it reports first.
func (l *loads) suspect(id string, d time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	l.entryLocked(id, now).suspectUntil = now.Add(d)
	l.mu.Unlock()
}

// candidate fills c.Load and c.Prefix for id and reports whether the worker may take new work.
// The caller holds no lock; candidate takes it briefly.
func (l *loads) candidate(id string, c *placement.Candidate) bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entryLocked(id, now)
	last := e.firstSeen
	if e.reported.After(last) {
		last = e.reported
	}
	if now.Sub(last) > l.ttl || now.Before(e.suspectUntil) {
		return false
	}
	c.Load = e.load
	c.Load.QueueDepth += e.chargedQueue
	c.Load.FreeKVBlocks -= e.chargedBlocks
	if e.prefix != nil {
		c.Prefix = e.prefix
	}
	return true
}

// charge records a placement on id until the worker's next report.
func (l *loads) charge(id string, blocks int) {
	l.mu.Lock()
	if e, ok := l.entries[id]; ok {
		e.chargedQueue++
		e.chargedBlocks += blocks
	}
	l.mu.Unlock()
}

// snapshot returns the report for id (nil if none) and its age.
func (l *loads) snapshot(id string) (*pb.Load, time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	if !ok || e.reported.IsZero() {
		return nil, -1
	}
	return &pb.Load{
		NodeId:        id,
		QueueDepth:    int32(e.load.QueueDepth + e.chargedQueue),
		Running:       int32(e.load.Running),
		Waiting:       int32(e.load.Waiting),
		FreeKvBlocks:  int32(e.load.FreeKVBlocks),
		TotalKvBlocks: int32(e.load.TotalKVBlocks),
		BlockTokens:   int32(e.load.BlockTokens),
		TokensPerSec:  e.load.TokensPerSec,
		InFlight:      int32(e.inFlight),
	}, now.Sub(e.reported)
}

// idle reports whether id's latest report, made after since, shows no work in flight.
func (l *loads) idle(id string, since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	return ok && !e.reported.Before(since) && !e.reported.IsZero() && e.inFlight == 0 &&
		e.load.Running == 0 && e.load.QueueDepth == 0 && e.load.Waiting == 0
}

// retain forgets entries of nodes no longer registered, so removed workers do not accumulate.
func (l *loads) retain(keep func(id string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.entries {
		if !keep(id) {
			delete(l.entries, id)
		}
	}
}
