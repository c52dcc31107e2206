package kvcache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/tandemserve/tandem/kernels"
)

// ErrBudget reports a memory budget too small for one block or a free-memory
// figure that cannot be read.
var ErrBudget = errors.New("kvcache: bad memory budget")

// BlocksForBudget returns how many blocks of spec's shape (spec.Blocks is
// ignored) fit in budget bytes across all layers.
func BlocksForBudget(spec kernels.KVSpec, budget int64) (int, error) {
	spec.Blocks = 1
	if err := spec.Validate(); err != nil {
		return 0, fmt.Errorf("kvcache: size budget: %w", err)
	}
	per := int64(spec.Layers) * int64(spec.BlockBytes())
	n := budget / per
	if n < 1 {
		return 0, fmt.Errorf("%w: %d bytes hold no block of %d bytes (%d layers)", ErrBudget, budget, per, spec.Layers)
	}
	return int(min(n, 1<<30)), nil
}

// BudgetFromFraction returns fraction (0 < fraction <= 1) of the memory the
// kernel reports as available (MemAvailable in /proc/meminfo).
func BudgetFromFraction(fraction float64) (int64, error) {
	if !(fraction > 0 && fraction <= 1) {
		return 0, fmt.Errorf("%w: fraction %v not in (0, 1]", ErrBudget, fraction)
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBudget, err)
	}
	avail, err := ParseMemAvailable(data)
	if err != nil {
		return 0, err
	}
	return int64(float64(avail) * fraction), nil
}

// ParseMemAvailable extracts MemAvailable, in bytes, from /proc/meminfo text.
func ParseMemAvailable(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 || string(f[0]) != "MemAvailable:" {
			continue
		}
		kb, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil || kb < 0 || kb > 1<<50 {
			return 0, fmt.Errorf("%w: MemAvailable %q", ErrBudget, f[1])
		}
		if len(f) >= 3 && string(f[2]) != "kB" {
			return 0, fmt.Errorf("%w: MemAvailable unit %q", ErrBudget, f[2])
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBudget, err)
	}
	return 0, fmt.Errorf("%w: no MemAvailable line", ErrBudget)
}
