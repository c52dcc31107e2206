package transport

import (
	"fmt"
	"os"
	"strings"

	"github.com/tandemserve/tandem/kernels"
)

// LayoutKThenV is the block layout of kernels.KVCache: a block holds its
// BlockSize key rows followed by its BlockSize value rows. Peers with another
// layout would exchange bytes that mean something else, so it is checked.
const LayoutKThenV = "kv-block/k-then-v/v1"

// Descriptor describes one agent's registered KV memory. Two agents can
// exchange blocks byte for byte only when Compatible says so.
type Descriptor struct {
	NodeID  string
	ModelID string
	Spec    kernels.KVSpec // Spec.Blocks is the agent's own pool size and may differ
	Layout  string
	// HostID identifies the machine (hostname and boot id); equal host ids
	// let a dialer pick shared memory.
	HostID string
}

// Validate checks the descriptor is complete.
func (d Descriptor) Validate() error {
	if d.NodeID == "" || d.ModelID == "" || d.Layout == "" {
		return fmt.Errorf("%w: descriptor needs node id, model id and layout: %+v", ErrInvalid, d)
	}
	if err := d.Spec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Compatible reports whether blocks can move between a and b, naming every
// mismatch when they cannot.
func Compatible(a, b Descriptor) error {
	var bad []string
	check := func(name string, x, y any) {
		if x != y {
			bad = append(bad, fmt.Sprintf("%s %v != %v", name, x, y))
		}
	}
	check("model id", a.ModelID, b.ModelID)
	check("dtype", a.Spec.DType, b.Spec.DType)
	check("layer count", a.Spec.Layers, b.Spec.Layers)
	check("kv heads", a.Spec.KVHeads, b.Spec.KVHeads)
	check("head dim", a.Spec.HeadDim, b.Spec.HeadDim)
	check("block size", a.Spec.BlockSize, b.Spec.BlockSize)
	check("layout", a.Layout, b.Layout)
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrIncompatible, strings.Join(bad, ", "))
	}
	return nil
}

// LocalHostID identifies this machine: the hostname plus the kernel's boot
// id, so two containers sharing a hostname but not a kernel (and so not
// /dev/shm or memfd passing) are told apart.
func LocalHostID() string {
	host, _ := os.Hostname()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return host
	}
	return host + "/" + strings.TrimSpace(string(boot))
}
