package engine_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cpu"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

// smolShape is SmolLM2-135M's architecture: random weights of this shape cost
// exactly what the real model costs, without the 98 MB file.
func smolShape() llama.Config {
	return llama.Config{Name: "smollm2-135m-shape", Layers: 30, Embd: 576, FF: 1536, Heads: 9, KVHeads: 3, HeadDim: 64,
		Vocab: 49152, ContextLength: 8192, RoPEBase: 100000, RoPEDims: 64, RoPEFreqScale: 1, RoPEInterleaved: true,
		NormEps: 1e-5, TiedEmbeddings: true}
}

func randomSmol(t testing.TB, be kernels.Backend) *llama.Model {
	t.Helper()
	cfg := smolShape()
	src, err := llamatest.Random(cfg, quant.Q4_1, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.New(cfg, be, src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func cudaBackend(t testing.TB) kernels.Backend {
	t.Helper()
	if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
		t.Skip("GPU test: set TANDEM_CUDA_TESTS=1 on a CUDA host")
	}
	b, err := cuda.New(cuda.Config{LibPath: os.Getenv("TANDEM_CUDA_LIB")})
	if err != nil {
		t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func randomPrompts(n, length int) [][]int32 {
	out := make([][]int32, n)
	for i := range out {
		for j := range length + 3*i {
			out[i] = append(out[i], int32((i*7919+j*104729)%49000+10))
		}
	}
	return out
}

// TestGPUEngineBatchedEqualsAlone runs the engine unchanged on the CUDA
// backend: the block tables, chunked prefill and continuous batching must
// give identical greedy outputs batched and alone there too.
func TestGPUEngineBatchedEqualsAlone(t *testing.T) {
	m := randomSmol(t, cudaBackend(t))
	sc := scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}
	var reqs []engine.Request
	for _, p := range randomPrompts(4, 20) {
		reqs = append(reqs, engine.Request{Tokens: p, Params: greedy(16)})
	}
	s := setup{blocks: 64, blockSize: 16, sched: sc}
	var alone [][]int32
	for _, r := range reqs {
		alone = append(alone, run(t, start(t, m, s), []engine.Request{r})[0])
	}
	if diff := cmp.Diff(alone, run(t, start(t, m, s), reqs)); diff != "" {
		t.Errorf("CUDA: batched outputs differ from solo runs (-alone +batched):\n%s", diff)
	}
}

// TestGPUEngineBench prints the engine benchmark report for SmolLM2-135M's
// shape on the CUDA backend.
func TestGPUEngineBench(t *testing.T) {
	m := randomSmol(t, cudaBackend(t))
	logBench(t, m)
}

// TestEngineBenchRandomWeightsCPU prints the engine benchmark report for
// SmolLM2-135M's shape on the CPU backend; set TANDEM_ENGINE_BENCH=1 (it
// takes minutes on two cores).
func TestEngineBenchRandomWeightsCPU(t *testing.T) {
	if os.Getenv("TANDEM_ENGINE_BENCH") != "1" {
		t.Skip("benchmark run: set TANDEM_ENGINE_BENCH=1")
	}
	be, err := cpu.New(cpu.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	logBench(t, randomSmol(t, be))
}

func logBench(t *testing.T, m *llama.Model) {
	t.Helper()
	opts := engine.DefaultBenchOptions()
	opts.ModelID = m.Config().Name
	rep, err := engine.RunEngineBench(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backend %s: %s", m.Backend().Name(), js)
}
