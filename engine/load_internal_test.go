package engine

import (
	"math"
	"testing"
	"time"
)

func TestMeterRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name       string
		steps      int
		gap        time.Duration // between step ends
		busy       time.Duration
		dec, pre   int
		at         time.Duration // query time after the last step
		wantDecode float64
		wantPrompt float64
	}{
		// 10 steps of 100 ms, each 4 decoded and 16 prompt tokens: the
		// window starts at the first step's start, 1 s before the last end.
		{"steady", 10, 100 * time.Millisecond, 100 * time.Millisecond, 4, 16, 0, 40, 160},
		// Idle for a second after the same steps: rates halve.
		{"decays when idle", 10, 100 * time.Millisecond, 100 * time.Millisecond, 4, 16, time.Second, 20, 80},
		// Steps older than ten seconds are forgotten.
		{"forgotten", 10, 100 * time.Millisecond, 100 * time.Millisecond, 4, 16, 11 * time.Second, 0, 0},
		// Only the last meterWindow steps count: 2*window steps of 10 ms.
		{"window", 2 * meterWindow, 10 * time.Millisecond, 10 * time.Millisecond, 1, 0, 0, 100, 0},
		{"empty", 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMeter()
			end := t0
			for range tc.steps {
				end = end.Add(tc.gap)
				m.add(end, tc.dec, tc.pre, tc.busy)
			}
			dec, pre := m.rates(end.Add(tc.at))
			if math.Abs(dec-tc.wantDecode) > 1e-9 || math.Abs(pre-tc.wantPrompt) > 1e-9 {
				t.Errorf("rates = %v decode, %v prompt; want %v, %v", dec, pre, tc.wantDecode, tc.wantPrompt)
			}
			if m.steps != uint64(tc.steps) || m.decoded != uint64(tc.steps*tc.dec) {
				t.Errorf("totals: %d steps, %d decoded", m.steps, m.decoded)
			}
		})
	}
}
