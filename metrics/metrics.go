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

// RegisterEngine exports an engine's load, read at scrape time, labelled with
// the worker's role.
func RegisterEngine(r *Registry, role string, load func() engine.Load) {
	r.reg.MustRegister(&engineCollector{role: role, load: load})
}

type engineCollector struct {
	role string
	load func() engine.Load
}

var _ prometheus.Collector = (*engineCollector)(nil)

var (
	descRunning = prometheus.NewDesc("tandem_requests_running", "Sequences in the engine's running batch.", []string{"role"}, nil)
	descWaiting = prometheus.NewDesc("tandem_requests_waiting", "Sequences waiting to be scheduled.", []string{"role"}, nil)
	descKVUsage = prometheus.NewDesc("tandem_kv_cache_usage_ratio", "Fraction of KV blocks in use (not free or evictable).", []string{"role"}, nil)
	descQueries = prometheus.NewDesc("tandem_prefix_cache_queries_total", "Full prompt blocks looked up in the prefix cache.", []string{"role"}, nil)
	descHits    = prometheus.NewDesc("tandem_prefix_cache_hits_total", "Full prompt blocks found in the prefix cache.", []string{"role"}, nil)
	descPreempt = prometheus.NewDesc("tandem_preemptions_total", "Sequences preempted under memory pressure.", []string{"role"}, nil)
	descDecoded = prometheus.NewDesc("tandem_engine_decode_tokens_total", "Tokens decoded by the engine.", []string{"role"}, nil)
	descPrompt  = prometheus.NewDesc("tandem_engine_prompt_tokens_total", "Prompt tokens computed by the engine.", []string{"role"}, nil)
)

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descWaiting, descKVUsage, descQueries, descHits, descPreempt, descDecoded, descPrompt} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.load()
	usage := 0.0
	if l.TotalBlocks > 0 {
		usage = float64(l.TotalBlocks-l.FreeBlocks) / float64(l.TotalBlocks)
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(l.Running), c.role)
	ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(l.Waiting), c.role)
	ch <- prometheus.MustNewConstMetric(descKVUsage, prometheus.GaugeValue, usage, c.role)
	ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue, float64(l.PrefixHits+l.PrefixMisses), c.role)
	ch <- prometheus.MustNewConstMetric(descHits, prometheus.CounterValue, float64(l.PrefixHits), c.role)
	ch <- prometheus.MustNewConstMetric(descPreempt, prometheus.CounterValue, float64(l.Preemptions), c.role)
	ch <- prometheus.MustNewConstMetric(descDecoded, prometheus.CounterValue, float64(l.DecodeTokens), c.role)
	ch <- prometheus.MustNewConstMetric(descPrompt, prometheus.CounterValue, float64(l.PromptTokens), c.role)
}
