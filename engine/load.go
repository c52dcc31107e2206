package engine

import (
	"time"
)

// Load is a snapshot of the engine's occupancy and throughput, for the
// worker's load reports and the coordinator's placement.
type Load struct {
	Running      int
	Waiting      int
	TotalBlocks  int
	FreeBlocks   int // allocatable now, including evictable cached blocks
	CachedBlocks int // registered in the prefix cache
	BlockSize    int
	// DecodeTokensPerSec and PromptTokensPerSec are rates over the recent
	// window of steps (up to meterWindow of them, and ten seconds).
	DecodeTokensPerSec float64
	PromptTokensPerSec float64
	Steps              uint64
	DecodeTokens       uint64
	PromptTokens       uint64
	PrefixHits         uint64 // blocks reused from the prefix cache
	PrefixMisses       uint64 // full prompt blocks that had to be computed
	Evictions          uint64
	Preemptions        uint64
	// PrefixHashes summarises the prefix cache for placement: at most
	// MaxReportedHashes block hashes, hottest first.
	PrefixHashes []uint64
}

// MaxReportedHashes bounds the prefix-cache summary of a load report (the
// coordinator keeps at most this many per worker).
const MaxReportedHashes = 4096

// Load returns the current load.
func (e *Engine) Load() Load {
	kv := e.kv.Stats()
	hashes := e.kv.CachedHashes(MaxReportedHashes)
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.sched.Stats()
	dec, pre := e.meter.rates(time.Now())
	return Load{
		Running: st.Running, Waiting: st.Waiting,
		TotalBlocks: kv.Blocks, FreeBlocks: kv.Free, CachedBlocks: kv.Cached, BlockSize: e.kv.BlockSize(),
		DecodeTokensPerSec: dec, PromptTokensPerSec: pre,
		Steps: e.meter.steps, DecodeTokens: e.meter.decoded, PromptTokens: e.meter.prompted,
		PrefixHits: kv.Hits, PrefixMisses: kv.Misses, Evictions: kv.Evictions,
		Preemptions: st.Preemptions, PrefixHashes: hashes,
	}
}

const (
	meterWindow = 64
	meterMaxAge = 10 * time.Second
)

type stepRecord struct {
	end      time.Time
	busy     time.Duration
	decoded  int
	prompted int
}

// meter keeps the last steps to compute recent token rates. Guarded by the
// engine lock.
type meter struct {
	ring                     [meterWindow]stepRecord
	n, next                  int
	steps, decoded, prompted uint64
}

func newMeter() meter { return meter{} }

func (m *meter) add(end time.Time, decoded, prompted int, busy time.Duration) {
	m.ring[m.next] = stepRecord{end: end, busy: busy, decoded: decoded, prompted: prompted}
	m.next = (m.next + 1) % meterWindow
	m.n = min(m.n+1, meterWindow)
	m.steps++
	m.decoded += uint64(decoded)
	m.prompted += uint64(prompted)
}

// rates returns decode and prompt tokens per second over the recent steps:
// tokens divided by the wall time from the first kept step's start to now,
// so an idle engine's rate decays to zero.
func (m *meter) rates(now time.Time) (decode, prompt float64) {
	var from time.Time
	var dec, pre int
	for i := range m.n {
		r := m.ring[(m.next-1-i+meterWindow)%meterWindow]
		if now.Sub(r.end) > meterMaxAge {
			break
		}
		dec += r.decoded
		pre += r.prompted
		from = r.end.Add(-r.busy)
	}
	if from.IsZero() {
		return 0, 0
	}
	secs := now.Sub(from).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	return float64(dec) / secs, float64(pre) / secs
}
