// Package metrics defines the Prometheus metrics every Tandem serving process
// exports under the tandem_ prefix. Nothing here is global: each process (or
// test) builds its own Registry and passes the typed metric sets to the
// components that observe them, so two clusters in one test binary never share
// counters.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandemserve/tandem/engine"
)

// Registry is one process's metrics registry.
type Registry struct {
	reg *prometheus.Registry
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{reg: reg}
}

// Prometheus exposes the underlying registry for other components' metrics.
func (r *Registry) Prometheus() *prometheus.Registry { return r.reg }

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// latencyBuckets span 1 ms to about 65 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

// Gateway holds the request-level metrics a gateway observes.
type Gateway struct {
	TTFT         prometheus.Histogram
	InterToken   prometheus.Histogram
	EndToEnd     prometheus.Histogram
	Queue        prometheus.Histogram
	Placement    prometheus.Histogram
	Running      prometheus.Gauge
	QueuedTokens prometheus.Gauge
	Requests     *prometheus.CounterVec // by outcome: ok, client_error, rejected, error, cancelled
	Resumes      prometheus.Counter
	PromptTokens prometheus.Counter
	OutputTokens prometheus.Counter
}

// NewGateway registers the gateway metrics in r.
func NewGateway(r *Registry) *Gateway {
	h := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
	}
	g := &Gateway{
		TTFT:         h("tandem_time_to_first_token_seconds", "Time from request arrival to the first generated token."),
		InterToken:   h("tandem_inter_token_latency_seconds", "Time between consecutive generated tokens of one request."),
		EndToEnd:     h("tandem_e2e_request_latency_seconds", "Time from request arrival to its last token."),
		Queue:        h("tandem_request_queue_seconds", "Time from request arrival until a worker accepted it."),
		Placement:    h("tandem_placement_latency_seconds", "Time to choose the workers of a request."),
		Running:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_gateway_requests_running", Help: "Requests the gateway is serving."}),
		QueuedTokens: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tandem_gateway_admitted_tokens", Help: "Prompt plus maximum output tokens of admitted, unfinished requests."}),
		Requests:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem_requests_total", Help: "Finished requests by outcome."}, []string{"outcome"}),
		Resumes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_request_resumes_total", Help: "Requests resumed on another worker after theirs failed."}),
		PromptTokens: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_prompt_tokens_total", Help: "Prompt tokens of admitted requests."}),
		OutputTokens: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_generation_tokens_total", Help: "Tokens generated and sent to clients."}),
	}
	r.reg.MustRegister(g.TTFT, g.InterToken, g.EndToEnd, g.Queue, g.Placement, g.Running, g.QueuedTokens, g.Requests, g.Resumes, g.PromptTokens, g.OutputTokens)
	return g
}

// Worker holds the latencies a worker measures at its engine, without the
// gateway and network hops: comparing them with the gateway's
// tandem_time_to_first_token_seconds and tandem_inter_token_latency_seconds
// gives the serving path's overhead under the same load.
type Worker struct {
	// EngineTTFT is from admission into the engine to its first token.
	EngineTTFT prometheus.Histogram
	// EngineInterToken is the gap between consecutive tokens the engine
	// streamed for one request.
	EngineInterToken prometheus.Histogram
}

// NewWorker registers a worker's engine latency metrics, labelled by role.
func NewWorker(r *Registry, role string) (*Worker, error) {
	w := &Worker{
		EngineTTFT: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_engine_time_to_first_token_seconds",
			Help: "Time from admission into a worker's engine to the request's first token.", Buckets: latencyBuckets,
			ConstLabels: prometheus.Labels{"role": role}}),
		EngineInterToken: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_engine_inter_token_latency_seconds",
			Help: "Gap between consecutive tokens a worker's engine streamed for one request.", Buckets: latencyBuckets,
			ConstLabels: prometheus.Labels{"role": role}}),
	}
	for _, c := range []prometheus.Collector{w.EngineTTFT, w.EngineInterToken} {
		if err := r.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Transfer holds the KV transfer metrics of a prefill worker.
type Transfer struct {
	Bytes    prometheus.Counter
	Duration prometheus.Histogram
	Failures prometheus.Counter
}

// NewTransfer registers the KV transfer metrics in r.
func NewTransfer(r *Registry) *Transfer {
	t := &Transfer{
		Bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_kv_transfer_bytes_total", Help: "KV bytes pushed to decode workers."}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tandem_kv_transfer_duration_seconds", Help: "Time from reserve to commit of one KV transfer.", Buckets: latencyBuckets}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_kv_transfer_failures_total", Help: "KV transfers that failed."}),
	}
	r.reg.MustRegister(t.Bytes, t.Duration, t.Failures)
	return t
}

// RegisterReceiver exports a decode worker's KV receiver state, read at
// scrape time: transfers holding blocks, and blocks a stalled in-place
// writer keeps out of the pool (non-zero for long means a stuck prefill
// process on this host).
func RegisterReceiver(r *Registry, active, quarantined func() int) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_kv_transfers_active", Help: "KV transfers holding blocks at this decode worker."},
			func() float64 { return float64(active()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_kv_blocks_quarantined", Help: "KV blocks held back because an in-place writer stalled inside them."},
			func() float64 { return float64(quarantined()) }),
	} {
		if err := r.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// RegisterEngine exports an engine's load, read at scrape time, labelled
// with the worker's role. Several workers may share one registry (tandem dev)
// as long as their roles differ.
func RegisterEngine(r *Registry, role string, load func() engine.Load) error {
	c := &engineCollector{load: load}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, prometheus.Labels{"role": role})
	}
	c.running = desc("tandem_requests_running", "Sequences in the engine's running batch.")
	c.waiting = desc("tandem_requests_waiting", "Sequences waiting to be scheduled.")
	c.kvUsage = desc("tandem_kv_cache_usage_ratio", "Fraction of KV blocks in use (not free or evictable).")
	c.queries = desc("tandem_prefix_cache_queries_total", "Full prompt blocks looked up in the prefix cache.")
	c.hits = desc("tandem_prefix_cache_hits_total", "Full prompt blocks found in the prefix cache.")
	c.preempt = desc("tandem_preemptions_total", "Sequences preempted under memory pressure.")
	c.decoded = desc("tandem_engine_decode_tokens_total", "Tokens decoded by the engine.")
	c.prompt = desc("tandem_engine_prompt_tokens_total", "Prompt tokens computed by the engine.")
	return r.reg.Register(c)
}

type engineCollector struct {
	load                                                               func() engine.Load
	running, waiting, kvUsage, queries, hits, preempt, decoded, prompt *prometheus.Desc
}

var _ prometheus.Collector = (*engineCollector)(nil)

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.running, c.waiting, c.kvUsage, c.queries, c.hits, c.preempt, c.decoded, c.prompt} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.load()
	usage := 0.0
	if l.TotalBlocks > 0 {
		usage = float64(l.TotalBlocks-l.FreeBlocks) / float64(l.TotalBlocks)
	}
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(l.Running))
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(l.Waiting))
	ch <- prometheus.MustNewConstMetric(c.kvUsage, prometheus.GaugeValue, usage)
	ch <- prometheus.MustNewConstMetric(c.queries, prometheus.CounterValue, float64(l.PrefixHits+l.PrefixMisses))
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(l.PrefixHits))
	ch <- prometheus.MustNewConstMetric(c.preempt, prometheus.CounterValue, float64(l.Preemptions))
	ch <- prometheus.MustNewConstMetric(c.decoded, prometheus.CounterValue, float64(l.DecodeTokens))
	ch <- prometheus.MustNewConstMetric(c.prompt, prometheus.CounterValue, float64(l.PromptTokens))
}
