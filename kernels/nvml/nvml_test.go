package nvml

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(lib nvml.Interface) Config {
	c := DefaultConfig()
	c.Lib = lib
	c.XIDWait = 5 * time.Millisecond
	return c
}

// fakeHost is an NVML mock with two H100s whose telemetry the test sets, and
// an event set the test feeds XID events through.
type fakeHost struct {
	lib    *mock.Interface
	devs   []*mock.Device
	events chan nvml.EventData
}

func newFakeHost(powerSupported bool) *fakeHost {
	h := &fakeHost{events: make(chan nvml.EventData, 8)}
	for i := 0; i < 2; i++ {
		i := i
		d := &mock.Device{
			GetUUIDFunc: func() (string, nvml.Return) { return []string{"GPU-aaaa", "GPU-bbbb"}[i], nvml.SUCCESS },
			GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: 80 << 30, Used: uint64(i+1) << 30, Free: 80<<30 - uint64(i+1)<<30}, nvml.SUCCESS
			},
			GetCudaComputeCapabilityFunc: func() (int, int, nvml.Return) { return 9, 0, nvml.SUCCESS },
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
				return nvml.Utilization{Gpu: uint32(40 + 10*i)}, nvml.SUCCESS
			},
			GetTemperatureFunc: func(nvml.TemperatureSensors) (uint32, nvml.Return) { return uint32(50 + i), nvml.SUCCESS },
			GetPowerUsageFunc: func() (uint32, nvml.Return) {
				if !powerSupported {
					return 0, nvml.ERROR_NOT_SUPPORTED
				}
				return 350_500, nvml.SUCCESS
			},
			RegisterEventsFunc: func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS },
		}
		h.devs = append(h.devs, d)
	}
	set := &mock.EventSet{
		WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
			select {
			case ev := <-h.events:
				return ev, nvml.SUCCESS
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	h.lib = &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		ErrorStringFunc:            func(r nvml.Return) string { return "mock error " + r.String() },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(h.devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) { return h.devs[i], nvml.SUCCESS },
		EventSetCreateFunc:         func() (nvml.EventSet, nvml.Return) { return set, nvml.SUCCESS },
	}
	return h
}

func TestOpenWithoutDriverReportsNoGPUs(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED} {
		lib := &mock.Interface{
			InitFunc:        func() nvml.Return { return ret },
			ErrorStringFunc: func(r nvml.Return) string { return r.String() },
		}
		m, err := Open(testConfig(lib))
		if err != nil {
			t.Fatalf("Open with %v: %v", ret, err)
		}
		if inv := m.Inventory(); len(inv) != 0 {
			t.Fatalf("inventory without a driver: %+v", inv)
		}
		s, err := m.Sample()
		if err != nil || len(s) != 0 {
			t.Fatalf("Sample without a driver: %v, %v", s, err)
		}
		reg := prometheus.NewPedanticRegistry()
		if err := Register(reg, m); err != nil {
			t.Fatal(err)
		}
		if got := gather(t, reg); len(got) != 0 {
			t.Fatalf("metrics without a driver: %v", got)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// On this machine the real library: CI hosts have no driver and must get
// an empty inventory, not an error; a GPU host gets its GPUs.
func TestOpenRealLibrary(t *testing.T) {
	m, err := Open(DefaultConfig())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer m.Close()
	for _, g := range m.Inventory() {
		if g.UUID == "" || g.Name == "" || g.MemoryTotal == 0 {
			t.Errorf("incomplete GPU entry %+v", g)
		}
	}
	t.Logf("inventory: %+v", m.Inventory())
}

func TestOpenFailsOnBrokenDriver(t *testing.T) {
	lib := &mock.Interface{
		InitFunc:        func() nvml.Return { return nvml.ERROR_UNKNOWN },
		ErrorStringFunc: func(r nvml.Return) string { return "unknown error" },
	}
	if _, err := Open(testConfig(lib)); !errors.Is(err, ErrNVML) {
		t.Fatalf("Open = %v, want ErrNVML", err)
	}
}

func TestInventory(t *testing.T) {
	h := newFakeHost(true)
	m, err := Open(testConfig(h.lib))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []GPU{
		{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 << 30, ComputeCapability: "9.0", Driver: "550.54.15"},
		{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 << 30, ComputeCapability: "9.0", Driver: "550.54.15"},
	}
	if diff := cmp.Diff(want, m.Inventory()); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}
}

func TestMetrics(t *testing.T) {
	common := map[string]float64{
		`tandem_gpu_info{compute_capability="9.0",driver="550.54.15",gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"}`: 1,
		`tandem_gpu_info{compute_capability="9.0",driver="550.54.15",gpu="1",name="NVIDIA H100 80GB HBM3",uuid="GPU-bbbb"}`: 1,
		`tandem_gpu_utilization_ratio{gpu="0",uuid="GPU-aaaa"}`:                                                             0.4,
		`tandem_gpu_utilization_ratio{gpu="1",uuid="GPU-bbbb"}`:                                                             0.5,
		`tandem_gpu_memory_used_bytes{gpu="0",uuid="GPU-aaaa"}`:                                                             1 << 30,
		`tandem_gpu_memory_used_bytes{gpu="1",uuid="GPU-bbbb"}`:                                                             2 << 30,
		`tandem_gpu_memory_free_bytes{gpu="0",uuid="GPU-aaaa"}`:                                                             79 << 30,
		`tandem_gpu_memory_free_bytes{gpu="1",uuid="GPU-bbbb"}`:                                                             78 << 30,
		`tandem_gpu_temperature_celsius{gpu="0",uuid="GPU-aaaa"}`:                                                           50,
		`tandem_gpu_temperature_celsius{gpu="1",uuid="GPU-bbbb"}`:                                                           51,
		`tandem_gpu_xid_errors_total{gpu="0",uuid="GPU-aaaa",xid="none"}`:                                                   0,
		`tandem_gpu_xid_errors_total{gpu="1",uuid="GPU-bbbb",xid="none"}`:                                                   0,
	}
	withPower := map[string]float64{
		`tandem_gpu_power_watts{gpu="0",uuid="GPU-aaaa"}`: 350.5,
		`tandem_gpu_power_watts{gpu="1",uuid="GPU-bbbb"}`: 350.5,
	}
	tests := []struct {
		name  string
		power bool
		want  map[string]float64
	}{
		{"all metrics", true, merge(common, withPower)},
		{"power not supported", false, common},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(tc.power)
			m, err := Open(testConfig(h.lib))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			reg := prometheus.NewPedanticRegistry()
			if err := Register(reg, m); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, gather(t, reg)); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
		})
	}
}

func merge(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// gather scrapes reg into "name{label="value",...}" -> value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func TestXIDErrorsCounted(t *testing.T) {
	h := newFakeHost(true)
	m, err := Open(testConfig(h.lib))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h.events <- nvml.EventData{Device: h.devs[1], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	h.events <- nvml.EventData{Device: h.devs[1], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	h.events <- nvml.EventData{Device: h.devs[0], EventType: nvml.EventTypeXidCriticalError, EventData: 48}
	deadline := time.Now().Add(5 * time.Second)
	want := map[int]map[uint64]uint64{0: {48: 1}, 1: {79: 2}}
	for {
		got := m.XIDCounts()
		if cmp.Equal(want, got) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("XID counts %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := Register(reg, m); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	for k, want := range map[string]float64{
		`tandem_gpu_xid_errors_total{gpu="0",uuid="GPU-aaaa",xid="48"}`: 1,
		`tandem_gpu_xid_errors_total{gpu="1",uuid="GPU-bbbb",xid="79"}`: 2,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// Close joins the XID goroutine (goleak checks it) and may be called twice
// and concurrently with scrapes.
func TestCloseJoinsAndIsIdempotent(t *testing.T) {
	h := newFakeHost(true)
	m, err := Open(testConfig(h.lib))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			if _, err := m.Sample(); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, w := range []time.Duration{0, -time.Second, 2 * time.Minute} {
		c := DefaultConfig()
		c.XIDWait = w
		if err := c.Validate(); err == nil {
			t.Errorf("XIDWait %v accepted", w)
		}
	}
}
