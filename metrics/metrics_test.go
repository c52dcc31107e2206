package metrics_test

import (
	"strings"
	"testing"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/metrics"
)

func TestEngineCollector(t *testing.T) {
	r := metrics.NewRegistry()
	metrics.NewGateway(r)
	metrics.NewTransfer(r)
	loads := map[string]engine.Load{
		"decode":  {Running: 3, Waiting: 1, TotalBlocks: 10, FreeBlocks: 4, PrefixHits: 2, PrefixMisses: 6, Preemptions: 5},
		"prefill": {Running: 1, TotalBlocks: 0},
	}
	for role, l := range loads {
		if err := metrics.RegisterEngine(r, role, func() engine.Load { return l }); err != nil {
			t.Fatal(err)
		}
	}
	if err := metrics.RegisterReceiver(r, func() int { return 2 }, func() int { return 7 }); err != nil {
		t.Fatal(err)
	}
	// A second engine under a role already registered is refused.
	if err := metrics.RegisterEngine(r, "decode", func() engine.Load { return engine.Load{} }); err == nil {
		t.Fatal("duplicate role registered")
	}
	fams, err := r.Prometheus().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, lp := range m.GetLabel() {
				key += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
			}
			switch {
			case m.Gauge != nil:
				got[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			}
		}
	}
	cases := []struct {
		key  string
		want float64
	}{
		{"tandem_requests_running{role=decode}", 3},
		{"tandem_requests_waiting{role=decode}", 1},
		{"tandem_kv_cache_usage_ratio{role=decode}", 0.6},
		{"tandem_prefix_cache_queries_total{role=decode}", 8},
		{"tandem_prefix_cache_hits_total{role=decode}", 2},
		{"tandem_preemptions_total{role=decode}", 5},
		{"tandem_requests_running{role=prefill}", 1},
		{"tandem_kv_cache_usage_ratio{role=prefill}", 0},
		{"tandem_kv_transfer_failures_total", 0},
		{"tandem_kv_transfers_active", 2},
		{"tandem_kv_blocks_quarantined", 7},
		{"tandem_gateway_requests_running", 0},
	}
	for _, tc := range cases {
		v, ok := got[tc.key]
		if !ok || v != tc.want {
			t.Errorf("%s = %v (present %v), want %v", tc.key, v, ok, tc.want)
		}
	}
	for name := range got {
		if !strings.HasPrefix(name, "tandem_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s outside the tandem_ namespace", name)
		}
	}
}
