package nvml

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Monitor's telemetry as Prometheus metrics, sampled on
// every scrape. Labels: gpu (index), uuid, and name on tandem_gpu_info.
type Collector struct {
	m                                 *Monitor
	info, util, used, free, temp, pow *prometheus.Desc
	xid                               *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector describes the metrics of m.
func NewCollector(m *Monitor) *Collector {
	l := []string{"gpu", "uuid"}
	return &Collector{
		m:    m,
		info: prometheus.NewDesc("tandem_gpu_info", "GPU inventory; value is always 1.", []string{"gpu", "uuid", "name", "compute_capability", "driver"}, nil),
		util: prometheus.NewDesc("tandem_gpu_utilization_ratio", "Fraction of the last sample period the GPU was busy.", l, nil),
		used: prometheus.NewDesc("tandem_gpu_memory_used_bytes", "GPU memory in use.", l, nil),
		free: prometheus.NewDesc("tandem_gpu_memory_free_bytes", "GPU memory free.", l, nil),
		temp: prometheus.NewDesc("tandem_gpu_temperature_celsius", "GPU core temperature.", l, nil),
		pow:  prometheus.NewDesc("tandem_gpu_power_watts", "GPU power draw.", l, nil),
		xid:  prometheus.NewDesc("tandem_gpu_xid_errors_total", "Critical XID errors reported by the driver.", []string{"gpu", "uuid", "xid"}, nil),
	}
}

// Register adds a Collector for m to reg.
func Register(reg prometheus.Registerer, m *Monitor) error { return reg.Register(NewCollector(m)) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.util, c.used, c.free, c.temp, c.pow, c.xid} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed sample is reported as
// an invalid metric, which the registry turns into a scrape error.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.m.Inventory() {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, strconv.Itoa(g.Index), g.UUID, g.Name, g.ComputeCapability, g.Driver)
	}
	samples, err := c.m.Sample()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.util, err)
		return
	}
	for _, s := range samples {
		l := []string{strconv.Itoa(s.GPU.Index), s.GPU.UUID}
		if s.HasUtilization {
			ch <- prometheus.MustNewConstMetric(c.util, prometheus.GaugeValue, s.Utilization, l...)
		}
		if s.HasMemoryCounts {
			ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(s.MemoryUsed), l...)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(s.MemoryFree), l...)
		}
		if s.HasTemperature {
			ch <- prometheus.MustNewConstMetric(c.temp, prometheus.GaugeValue, s.TemperatureC, l...)
		}
		if s.HasPower {
			ch <- prometheus.MustNewConstMetric(c.pow, prometheus.GaugeValue, s.PowerW, l...)
		}
	}
	gpus := c.m.Inventory()
	for gpu, byXID := range c.m.XIDCounts() {
		uuid := ""
		if gpu >= 0 && gpu < len(gpus) {
			uuid = gpus[gpu].UUID
		}
		for xid, n := range byXID {
			ch <- prometheus.MustNewConstMetric(c.xid, prometheus.CounterValue, float64(n), strconv.Itoa(gpu), uuid, strconv.FormatUint(xid, 10))
		}
	}
	// GPUs without errors still export a zero counter, so rate() works
	// from the first error on.
	seen := c.m.XIDCounts()
	for _, g := range gpus {
		if len(seen[g.Index]) == 0 {
			ch <- prometheus.MustNewConstMetric(c.xid, prometheus.CounterValue, 0, strconv.Itoa(g.Index), g.UUID, "none")
		}
	}
}
