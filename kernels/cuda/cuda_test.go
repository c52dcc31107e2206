package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// These tests run everywhere: they cover the loader's failure paths and the
// host-side bookkeeping. Tests that need a GPU are in gpu_test.go.

func TestNewWithoutLibraryIsErrNoCUDA(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "libtandem_cuda.so")
	if err := os.WriteFile(garbage, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		want    error
		wantMsg string
	}{
		{"missing file", Config{LibPath: filepath.Join(dir, "missing", "libtandem_cuda.so")}, ErrNoCUDA, "libtandem_cuda.so not found (run make kernels)"},
		{"not a library", Config{LibPath: garbage}, ErrNoCUDA, "loading " + garbage},
		{"negative device", Config{Device: -1}, ErrInvalidArgument, "device -1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(tc.cfg)
			if err == nil {
				b.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v does not wrap %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.wantMsg)
			}
		})
	}
}

// TestNewDefaultWithoutGPU checks the message a CPU-only host gets from the
// default search: either the library is not built, or it is and there is
// no device.
func TestNewDefaultWithoutGPU(t *testing.T) {
	b, err := New(DefaultConfig())
	if err == nil {
		b.Close()
		t.Skip("a CUDA device is present")
	}
	if !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("error %v does not wrap ErrNoCUDA", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "not found (run make kernels)") && !strings.Contains(msg, "no CUDA device") {
		t.Fatalf("unclear error %q", msg)
	}
	t.Log(msg)
}

func TestDevices(t *testing.T) {
	if _, err := Devices(filepath.Join(t.TempDir(), "none.so")); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("Devices with no library: %v, want ErrNoCUDA", err)
	}
	lib := filepath.Join("build", libName)
	if _, err := os.Stat(lib); err != nil {
		t.Skip("library not built (make kernels)")
	}
	devs, err := Devices(lib)
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	for _, d := range devs {
		if d.Name == "" || d.TotalMemory == 0 || d.ComputeCapability[0] == 0 {
			t.Errorf("incomplete device info %+v", d)
		}
	}
	t.Logf("%d devices: %+v", len(devs), devs)
}

func TestPeakBandwidth(t *testing.T) {
	tests := []struct {
		info DeviceInfo
		want float64
	}{
		{DeviceInfo{MemoryClockKHz: 2_619_000, MemoryBusBits: 5120}, 2 * 2_619_000e3 * 5120 / 8},
		{DeviceInfo{Name: "NVIDIA H200"}, 4.8e12},
		{DeviceInfo{Name: "NVIDIA H100 80GB HBM3"}, 3.35e12},
		{DeviceInfo{Name: "NVIDIA H100 PCIe"}, 2.0e12},
		{DeviceInfo{Name: "some gpu"}, 0},
	}
	for _, tc := range tests {
		if got := tc.info.PeakBandwidth(); got != tc.want {
			t.Errorf("%+v: PeakBandwidth = %g, want %g", tc.info, got, tc.want)
		}
	}
}

func TestSupported(t *testing.T) {
	for _, tc := range []struct {
		t    quant.Type
		want bool
	}{
		{quant.F32, true}, {quant.F16, true}, {quant.BF16, true}, {quant.Q4_0, true},
		{quant.Q4_1, true}, {quant.Q5_0, true}, {quant.Q5_1, true}, {quant.Q8_0, true},
		{quant.Q4_K, true}, {quant.Q5_K, true}, {quant.Q6_K, true},
		{quant.Q2_K, false}, {quant.Q3_K, false}, {quant.Q8_1, false}, {quant.Q8_K, false}, {quant.Type(99), false},
	} {
		if got := Supported(tc.t); got != tc.want {
			t.Errorf("Supported(%v) = %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestAttentionTasks(t *testing.T) {
	spec := kernels.KVSpec{Layers: 1, Blocks: 400, BlockSize: 4, KVHeads: 1, HeadDim: 8}
	pad := []int32{-1, 0, 0, 0, 0, -1, 0, 0}
	// task is one work item: row, head, keys [begin, end), table offset,
	// partial slot.
	task := func(row, head, begin, end, off, part int32) []int32 {
		return []int32{row, head, end, off, begin, part, 0, 0}
	}
	cat := func(parts ...[]int32) []int32 {
		var out []int32
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	blocks := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(i)
		}
		return out
	}
	tests := []struct {
		name  string
		p     kernels.AttnParams
		qRows int
		want  attnWork
	}{
		{
			name:  "decode, GQA group of 3 in one thread block",
			p:     kernels.AttnParams{Heads: 3, KVHeads: 1, Seqs: []kernels.AttnSeq{{QueryStart: 0, QueryLen: 1, KVLen: 6, Blocks: []int32{5, 2, 7}}}},
			qRows: 1,
			// KVLen 6 uses 2 of the 3 listed blocks.
			want: attnWork{
				tasks:  cat(task(0, 0, 0, 6, 0, -1), task(0, 1, 0, 6, 0, -1), task(0, 2, 0, 6, 0, -1), pad),
				tables: []int32{5, 2},
			},
		},
		{
			name: "prefill then decode, two KV heads",
			p: kernels.AttnParams{Heads: 2, KVHeads: 2, Seqs: []kernels.AttnSeq{
				{QueryStart: 0, QueryLen: 2, KVLen: 2, Blocks: []int32{1}},
				{QueryStart: 2, QueryLen: 1, KVLen: 5, Blocks: []int32{3, 4}},
			}},
			qRows: 3,
			want: attnWork{
				tasks: cat(
					task(0, 0, 0, 1, 0, -1), task(1, 0, 0, 2, 0, -1), pad, pad, // seq 0, kv head 0: rows 0,1
					task(0, 1, 0, 1, 0, -1), task(1, 1, 0, 2, 0, -1), pad, pad, // seq 0, kv head 1
					task(2, 0, 0, 5, 1, -1), pad, pad, pad, // seq 1, kv head 0
					task(2, 1, 0, 5, 1, -1), pad, pad, pad, // seq 1, kv head 1
				),
				tables: []int32{1, 3, 4},
			},
		},
		{
			name:  "long decode is split into key ranges and combined",
			p:     kernels.AttnParams{Heads: 2, KVHeads: 1, Seqs: []kernels.AttnSeq{{QueryStart: 0, QueryLen: 1, KVLen: 1100, Blocks: blocks(275)}}},
			qRows: 1,
			want: attnWork{
				tasks: cat(
					task(0, 0, 0, 512, 0, 0), task(0, 1, 0, 512, 0, 3), pad, pad,
					task(0, 0, 512, 1024, 0, 1), task(0, 1, 512, 1024, 0, 4), pad, pad,
					task(0, 0, 1024, 1100, 0, 2), task(0, 1, 1024, 1100, 0, 5), pad, pad,
				),
				tables:  blocks(275),
				combine: []int32{0, 0, 0, 3, 0, 1, 3, 3},
				parts:   6,
			},
		},
		{
			name:  "split chunk: an early row reaching only the first range writes directly",
			p:     kernels.AttnParams{Heads: 1, KVHeads: 1, Seqs: []kernels.AttnSeq{{QueryStart: 0, QueryLen: 2, KVLen: 513, Blocks: blocks(129)}}},
			qRows: 2,
			want: attnWork{
				tasks: cat(
					task(0, 0, 0, 512, 0, -1), task(1, 0, 0, 512, 0, 0), pad, pad,
					task(1, 0, 512, 513, 0, 1), pad, pad, pad,
				),
				tables:  blocks(129),
				combine: []int32{1, 0, 0, 2},
				parts:   2,
			},
		},
		{
			name:  "long prefill is not split",
			p:     kernels.AttnParams{Heads: 1, KVHeads: 1, Seqs: []kernels.AttnSeq{{QueryStart: 0, QueryLen: 5, KVLen: 600, Blocks: blocks(150)}}},
			qRows: 5,
			want: attnWork{
				tasks: cat(
					task(0, 0, 0, 596, 0, -1), task(1, 0, 0, 597, 0, -1), task(2, 0, 0, 598, 0, -1), task(3, 0, 0, 599, 0, -1),
					task(4, 0, 0, 600, 0, -1), pad, pad, pad,
				),
				tables: blocks(150),
			},
		},
		{
			name:  "empty sequence contributes nothing",
			p:     kernels.AttnParams{Heads: 1, KVHeads: 1, Seqs: []kernels.AttnSeq{{QueryStart: 0, QueryLen: 0, KVLen: 0}}},
			qRows: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := attentionTasks(tc.p, tc.qRows, spec)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(attnWork{})); diff != "" {
				t.Errorf("work (-want +got):\n%s", diff)
			}
			if len(got.tasks)%(taskInts*attnWarps) != 0 {
				t.Errorf("%d task ints is not whole thread blocks", len(got.tasks))
			}
		})
	}
}

func TestAttentionTasksRejectsBadSequences(t *testing.T) {
	spec := kernels.KVSpec{Layers: 1, Blocks: 4, BlockSize: 4, KVHeads: 1, HeadDim: 8}
	tests := []struct {
		name string
		seq  kernels.AttnSeq
	}{
		{"query rows past the tensor", kernels.AttnSeq{QueryStart: 1, QueryLen: 2, KVLen: 2, Blocks: []int32{0}}},
		{"negative start", kernels.AttnSeq{QueryStart: -1, QueryLen: 1, KVLen: 1, Blocks: []int32{0}}},
		{"more queries than keys", kernels.AttnSeq{QueryStart: 0, QueryLen: 2, KVLen: 1, Blocks: []int32{0}}},
		{"too few blocks", kernels.AttnSeq{QueryStart: 0, QueryLen: 1, KVLen: 5, Blocks: []int32{0}}},
		{"block out of range", kernels.AttnSeq{QueryStart: 0, QueryLen: 1, KVLen: 1, Blocks: []int32{4}}},
		{"negative block", kernels.AttnSeq{QueryStart: 0, QueryLen: 1, KVLen: 1, Blocks: []int32{-1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := kernels.AttnParams{Heads: 1, KVHeads: 1, Seqs: []kernels.AttnSeq{tc.seq}}
			if _, err := attentionTasks(p, 2, spec); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  error
	}{
		{"default", DefaultConfig(), nil},
		{"q8 activations", Config{Activations: kernels.ActQ8}, nil},
		{"f32 activations", Config{Device: 1, Activations: kernels.ActF32}, nil},
		{"negative device", Config{Device: -2}, ErrInvalidArgument},
		{"unknown activations", Config{Activations: kernels.Activations(7)}, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if !errors.Is(err, tc.err) { // errors.Is(err, nil) is err == nil
				t.Fatalf("Validate() = %v, want %v", err, tc.err)
			}
		})
	}
}

// BenchmarkAttentionTasks measures the host-side work-list construction that
// precedes every attention launch: a batch-32 decode step at 4096 tokens of
// context (split into key ranges) for Llama-3-8B's 32 heads over 8 KV heads.
func BenchmarkAttentionTasks(b *testing.B) {
	spec := kernels.KVSpec{Layers: 1, Blocks: 32 * 257, BlockSize: 16, KVHeads: 8, HeadDim: 128}
	p := kernels.AttnParams{Heads: 32, KVHeads: 8, HeadDim: 128}
	for s := 0; s < 32; s++ {
		seq := kernels.AttnSeq{QueryStart: s, QueryLen: 1, KVLen: 4096}
		for i := 0; i < 256; i++ {
			seq.Blocks = append(seq.Blocks, int32(s*257+i))
		}
		p.Seqs = append(p.Seqs, seq)
	}
	var w attnWork
	b.ReportAllocs()
	for b.Loop() {
		if err := w.build(p, 32, spec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttentionTasksCached is the same call repeated, as every layer
// after the first of a step makes it: the cached work is reused.
func BenchmarkAttentionTasksCached(b *testing.B) {
	spec := kernels.KVSpec{Layers: 1, Blocks: 32 * 257, BlockSize: 16, KVHeads: 8, HeadDim: 128}
	p := kernels.AttnParams{Heads: 32, KVHeads: 8, HeadDim: 128}
	for s := 0; s < 32; s++ {
		seq := kernels.AttnSeq{QueryStart: s, QueryLen: 1, KVLen: 4096}
		for i := 0; i < 256; i++ {
			seq.Blocks = append(seq.Blocks, int32(s*257+i))
		}
		p.Seqs = append(p.Seqs, seq)
	}
	var c attnCache
	if _, _, err := c.lookup(p, 32, spec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, staged, err := c.lookup(p, 32, spec); err != nil || !staged {
			b.Fatalf("lookup: staged %v, %v", staged, err)
		}
	}
}

func TestAttnCache(t *testing.T) {
	spec := kernels.KVSpec{Layers: 1, Blocks: 16, BlockSize: 4, KVHeads: 1, HeadDim: 8}
	blocks := []int32{3, 1, 2}
	p := kernels.AttnParams{Heads: 2, KVHeads: 1, HeadDim: 8, Seqs: []kernels.AttnSeq{{QueryLen: 1, KVLen: 9, Blocks: blocks}}}
	var c attnCache
	steps := []struct {
		name   string
		change func()
		staged bool
	}{
		{"first call builds", func() {}, false},
		{"same call reuses", func() {}, true},
		{"caller rewrites its block table in place", func() { blocks[2] = 7 }, false},
		{"same again reuses", func() {}, true},
		{"longer sequence", func() { p.Seqs[0].KVLen = 10 }, false},
		{"other spec", func() { spec.BlockSize = 8 }, false},
		{"bad sequence fails", func() { p.Seqs[0].KVLen = 100 }, false},
		{"after a failure the next call builds", func() { p.Seqs[0].KVLen = 10 }, false},
	}
	for _, st := range steps {
		st.change()
		w, staged, err := c.lookup(p, 1, spec)
		if st.name == "bad sequence fails" {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("%s: err %v", st.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if staged != st.staged {
			t.Fatalf("%s: staged %v, want %v", st.name, staged, st.staged)
		}
		want, _ := attentionTasks(p, 1, spec)
		if diff := cmp.Diff(want.tasks, w.tasks); diff != "" {
			t.Fatalf("%s: cached tasks (-want +got):\n%s", st.name, diff)
		}
	}
}
