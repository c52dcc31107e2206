package coordinator

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemserve/tandem/coordinator/fsm"
)

// metrics are registered on the registry the caller passes in (never the global one).
type metrics struct {
	placeDuration *prometheus.HistogramVec
	raftState     prometheus.Gauge
	raftTerm      prometheus.Gauge
	nodes         *prometheus.GaugeVec
	placements    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		placeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_placement_duration_seconds",
			Help:    "Time the leader spends choosing workers for one request.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
		}, []string{"kind"}),
		raftState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_raft_state",
			Help: "Raft state of this coordinator: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
		}),
		raftTerm: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_raft_term",
			Help: "Current Raft term of this coordinator.",
		}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_nodes",
			Help: "Registered nodes by role and state, from the replicated state.",
		}, []string{"role", "state"}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_placements_total",
			Help: "Placement attempts by kind and result.",
		}, []string{"kind", "result"}),
	}
	for _, c := range []prometheus.Collector{m.placeDuration, m.raftState, m.raftTerm, m.nodes, m.placements} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("%w: metrics already registered (one registry per coordinator)", ErrConfig)
			}
			return nil, fmt.Errorf("coordinator: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observeRaft(r *raft.Raft) {
	m.raftState.Set(float64(r.State()))
	m.raftTerm.Set(float64(r.CurrentTerm()))
}

func (m *metrics) observeState(st *fsm.State) {
	m.nodes.Reset()
	for _, n := range st.Nodes {
		m.nodes.WithLabelValues(string(n.Role), string(n.State)).Inc()
	}
}
