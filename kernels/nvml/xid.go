package nvml

import (
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// startXID registers every GPU for critical XID events and starts the loop
// that counts them. A host whose GPUs do not support the events runs without
// the loop (and logs why).
func (m *Monitor) startXID(wait time.Duration) {
	if len(m.devs) == 0 {
		return
	}
	set, ret := m.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		m.log.Warn("XID events unavailable", "err", m.lib.ErrorString(ret))
		return
	}
	registered := 0
	for i, d := range m.devs {
		if ret := d.RegisterEvents(nvml.EventTypeXidCriticalError, set); ret != nvml.SUCCESS {
			m.log.Warn("XID events unavailable for GPU", "gpu", i, "err", m.lib.ErrorString(ret))
			continue
		}
		registered++
	}
	if registered == 0 {
		set.Free()
		return
	}
	m.set = set
	ms := uint32(wait / time.Millisecond)
	m.wg.Add(1)
	go m.xidLoop(set, max(ms, 1))
}

// xidLoop waits for events in slices of ms milliseconds so that it notices
// Close promptly; NVML's wait cannot be interrupted otherwise.
func (m *Monitor) xidLoop(set nvml.EventSet, ms uint32) {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		default:
		}
		ev, ret := set.Wait(ms)
		switch ret {
		case nvml.SUCCESS:
			m.countXID(ev)
		case nvml.ERROR_TIMEOUT:
		default:
			// A persistent failure (GPU lost): back off instead of spinning.
			m.log.Warn("XID event wait failed", "err", m.lib.ErrorString(ret))
			select {
			case <-m.stop:
				return
			case <-time.After(time.Duration(ms) * time.Millisecond):
			}
		}
	}
}

func (m *Monitor) countXID(ev nvml.EventData) {
	if ev.EventType != nvml.EventTypeXidCriticalError {
		return
	}
	gpu := -1
	if ev.Device != nil {
		if uuid, ret := ev.Device.GetUUID(); ret == nvml.SUCCESS {
			for i, g := range m.gpus {
				if g.UUID == uuid {
					gpu = i
				}
			}
		}
	}
	m.log.Error("GPU XID error", "gpu", gpu, "xid", ev.EventData)
	m.mu.Lock()
	m.xids[xidKey{gpu: gpu, xid: ev.EventData}]++
	m.mu.Unlock()
}
