// Package nvml reports the NVIDIA GPUs of a host and their health, through
// NVML (github.com/NVIDIA/go-nvml, which loads libnvidia-ml.so.1 at run
// time).
//
// A Monitor is opened once per worker process. Its Inventory (name, memory,
// compute capability, driver) is what the worker reports to the coordinator
// when it registers; Collector exports live telemetry (utilization, memory
// used and free, temperature, power) read on every Prometheus scrape, and a
// background loop counts XID errors, the driver's reports of GPU faults.
//
// Where there is no NVIDIA driver (CI, CPU-only workers) Open still
// succeeds: the Monitor reports no GPUs and exports no samples, so callers
// need no special case.
package nvml

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrNVML reports an NVML call that failed on a host where NVML loaded.
var ErrNVML = errors.New("nvml: call failed")

// GPU is one device's inventory entry.
type GPU struct {
	Index             int    `json:"index"`
	UUID              string `json:"uuid"`
	Name              string `json:"name"`
	MemoryTotal       uint64 `json:"memory_total_bytes"`
	ComputeCapability string `json:"compute_capability"` // "9.0"
	Driver            string `json:"driver"`             // "550.54.15"
}

// Sample is one device's telemetry at a point in time. A field the device
// does not support is reported as absent through the Has* flags.
type Sample struct {
	GPU             GPU
	Utilization     float64 // busy fraction of the last sample period, 0..1
	MemoryUsed      uint64
	MemoryFree      uint64
	TemperatureC    float64
	PowerW          float64
	HasUtilization  bool
	HasTemperature  bool
	HasPower        bool
	HasMemoryCounts bool
}

// Config configures a Monitor.
type Config struct {
	// Lib is the NVML interface; nil uses the real library. Tests pass a
	// mock (github.com/NVIDIA/go-nvml/pkg/nvml/mock).
	Lib nvml.Interface
	// Logger receives one line when NVML is unavailable and XID reports;
	// nil uses slog.Default.
	Logger *slog.Logger
	// XIDWait is how long one wait for XID events blocks before the loop
	// checks for Close; it bounds Close's latency.
	XIDWait time.Duration
}

// DefaultConfig uses the real NVML library.
func DefaultConfig() Config { return Config{XIDWait: 500 * time.Millisecond} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.XIDWait <= 0 || c.XIDWait > time.Minute {
		return fmt.Errorf("nvml: XIDWait %v outside (0, 1m]", c.XIDWait)
	}
	return nil
}

// Monitor holds NVML open for the life of a process.
type Monitor struct {
	lib  nvml.Interface
	log  *slog.Logger
	gpus []GPU
	devs []nvml.Device

	mu   sync.Mutex
	xids map[xidKey]uint64 // XID error counts

	stop chan struct{}
	wg   sync.WaitGroup
	set  nvml.EventSet // nil when XID events are not available
	once sync.Once
}

type xidKey struct {
	gpu int
	xid uint64
}

// Open initialises NVML and reads the inventory. When NVML or the driver is
// missing it returns a Monitor with no GPUs and a nil error; other failures
// on a host with a driver are errors.
func Open(cfg Config) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Monitor{lib: cfg.Lib, log: log.With("component", "nvml"), xids: map[xidKey]uint64{}, stop: make(chan struct{})}
	if m.lib == nil {
		m.lib = nvml.New()
	}
	if ret := m.lib.Init(); ret != nvml.SUCCESS {
		if absent(ret) {
			m.log.Info("no NVIDIA driver: reporting no GPUs", "reason", m.lib.ErrorString(ret))
			m.lib = nil
			return m, nil
		}
		return nil, m.errorf("init", ret)
	}
	if err := m.inventory(); err != nil {
		m.lib.Shutdown()
		return nil, err
	}
	m.startXID(cfg.XIDWait)
	return m, nil
}

// absent reports NVML results that mean "no NVIDIA GPU stack here".
func absent(ret nvml.Return) bool {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION, nvml.ERROR_FUNCTION_NOT_FOUND:
		return true
	}
	return false
}

func (m *Monitor) errorf(op string, ret nvml.Return) error {
	return fmt.Errorf("%w: %s: %s", ErrNVML, op, m.lib.ErrorString(ret))
}

func (m *Monitor) inventory() error {
	driver, ret := m.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return m.errorf("driver version", ret)
	}
	n, ret := m.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return m.errorf("device count", ret)
	}
	for i := 0; i < n; i++ {
		d, ret := m.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return m.errorf(fmt.Sprintf("device %d", i), ret)
		}
		g := GPU{Index: i, Driver: driver}
		if g.UUID, ret = d.GetUUID(); ret != nvml.SUCCESS {
			return m.errorf(fmt.Sprintf("device %d uuid", i), ret)
		}
		if g.Name, ret = d.GetName(); ret != nvml.SUCCESS {
			return m.errorf(fmt.Sprintf("device %d name", i), ret)
		}
		mem, ret := d.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return m.errorf(fmt.Sprintf("device %d memory", i), ret)
		}
		g.MemoryTotal = mem.Total
		if major, minor, ret := d.GetCudaComputeCapability(); ret == nvml.SUCCESS {
			g.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
		}
		m.gpus = append(m.gpus, g)
		m.devs = append(m.devs, d)
	}
	return nil
}

// Inventory lists the GPUs found at Open (empty without a driver). The
// slice is a copy.
func (m *Monitor) Inventory() []GPU { return append([]GPU(nil), m.gpus...) }

// Sample reads every GPU's telemetry now. Metrics a device does not support
// are left out of its Sample; only a failing device query is an error.
func (m *Monitor) Sample() ([]Sample, error) {
	out := make([]Sample, 0, len(m.devs))
	for i, d := range m.devs {
		s := Sample{GPU: m.gpus[i]}
		if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
			s.Utilization, s.HasUtilization = float64(u.Gpu)/100, true
		} else if ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, m.errorf(fmt.Sprintf("device %d utilization", i), ret)
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			s.MemoryUsed, s.MemoryFree, s.HasMemoryCounts = mem.Used, mem.Free, true
		} else if ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, m.errorf(fmt.Sprintf("device %d memory", i), ret)
		}
		if t, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
			s.TemperatureC, s.HasTemperature = float64(t), true
		} else if ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, m.errorf(fmt.Sprintf("device %d temperature", i), ret)
		}
		if mw, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
			s.PowerW, s.HasPower = float64(mw)/1000, true
		} else if ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, m.errorf(fmt.Sprintf("device %d power", i), ret)
		}
		out = append(out, s)
	}
	return out, nil
}

// XIDCounts returns the XID errors counted so far, per GPU index and XID.
func (m *Monitor) XIDCounts() map[int]map[uint64]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int]map[uint64]uint64{}
	for k, n := range m.xids {
		if out[k.gpu] == nil {
			out[k.gpu] = map[uint64]uint64{}
		}
		out[k.gpu][k.xid] = n
	}
	return out
}

// Close stops the XID loop, waits for it, and shuts NVML down.
func (m *Monitor) Close() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		m.wg.Wait()
		if m.lib == nil {
			return
		}
		if m.set != nil {
			m.set.Free()
		}
		if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
			err = m.errorf("shutdown", ret)
		}
	})
	return err
}
