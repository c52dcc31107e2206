//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSharedMemoryKV runs prefill and decode as separate processes on one
// host: the prefill worker reaches the decode worker's KV receiver through
// its unix socket and writes the prompt's KV blocks in place into the
// decode worker's memfd-backed cache. The completion must equal the
// single-process greedy reference.
func TestSharedMemoryKV(t *testing.T) {
	_, model := env(t)
	// Long enough (over 256 tokens) that placement sends it to prefill.
	prompt, n := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 30)+"Then the dog", 16
	want := generate(t, prompt, n, false)
	secret := []string{"TANDEM_CLUSTER_SECRET=e2e-secret-0123456789abcdef0123456789"}
	join := []string{"--coordinator", startCoordinator(t, secret)}

	dir := filepath.Join(t.TempDir(), "kv")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	dec := start(t, secret, append([]string{"decode", "--model", model, "--listen", "127.0.0.1:0", "--threads", "1", "--log-level", "warn",
		"--kv-socket", filepath.Join(dir, "kv.sock")}, join...)...)
	dec.waitFor(t, `decode worker listening grpc=(\S+)`)
	pre := start(t, secret, append([]string{"prefill", "--model", model, "--listen", "127.0.0.1:0", "--threads", "1", "--log-level", "info", "--kv-insecure"}, join...)...)
	pre.waitFor(t, `prefill worker listening grpc=(\S+)`)
	gw := start(t, secret, append([]string{"gateway", "--model", model, "--mode", "disaggregated",
		"--http-listen", "127.0.0.1:0", "--grpc-listen", "", "--log-level", "warn"}, join...)...)
	url := "http://" + gw.waitFor(t, `gateway listening http=(\S+)`)[1]

	body := map[string]any{"model": strings.TrimSuffix(filepath.Base(model), ".gguf"), "prompt": prompt, "max_tokens": n}
	code, _, out := post(t, url+"/v1/completions", "", body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, out)
	}
	if got := decodeCompletion(t, out).Choices[0].Text; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	pre.stop() // its log is complete once it has exited
	if log := pre.stderr.String(); !strings.Contains(log, "backend=shm in_place=true") {
		t.Errorf("prefill did not write KV in place over shared memory; its log:\n%s", tail(log, 3000))
	}
}
