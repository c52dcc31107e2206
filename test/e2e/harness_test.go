//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// env returns the binary and the model, skipping when either is missing.
func env(t *testing.T) (bin, model string) {
	t.Helper()
	bin, model = os.Getenv("TANDEM_BIN"), os.Getenv("TANDEM_MODEL")
	if bin == "" || model == "" {
		t.Skip("TANDEM_BIN and TANDEM_MODEL must be set (make test-e2e sets both)")
	}
	for _, p := range []string{bin, model} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("missing %s: %v", p, err)
		}
	}
	return bin, model
}

// proc is a tandem process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	lines  chan string
	done   chan struct{}
}

// start runs tandem with args and stops it (SIGTERM, then SIGKILL) at
// cleanup. Its stdout lines arrive on lines.
func start(t *testing.T, extraEnv []string, args ...string) *proc {
	t.Helper()
	bin, _ := env(t)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan string, 64), done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads any more; drop
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], tail(p.stderr.String(), 4000))
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitFor returns the first submatch of re in the process's output.
func (p *proc) waitFor(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l := <-p.lines:
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.done:
			t.Fatalf("process exited before printing %q: %s", re, tail(p.stderr.String(), 2000))
		case <-timeout:
			t.Fatalf("no %q within 2 minutes", re)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// generate runs `tandem generate` greedily: the single-sequence reference.
func generate(t *testing.T, prompt string, maxTokens int, chat bool) string {
	t.Helper()
	bin, model := env(t)
	args := []string{"generate", "--model", model, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens)}
	if chat {
		args = append(args, "--chat")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("generate: %v: %s", err, stderr.String())
	}
	return strings.TrimSuffix(string(out), "\n")
}

// post sends a JSON request and returns the status, headers and body.
func post(t *testing.T, url, key string, body any) (int, http.Header, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest("POST", url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

// completion is the part of an OpenAI response the tests read.
type completion struct {
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string  `json:"message"`
		Param   *string `json:"param"`
	} `json:"error"`
}

func decodeCompletion(t *testing.T, body []byte) completion {
	t.Helper()
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("response %q: %v", body, err)
	}
	return c
}

// streamText reads an SSE completion stream and returns its text, calling
// each(n) after the n-th content chunk.
func streamText(t *testing.T, url, key string, body any, each func(n int)) (string, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	var text, finish string
	n := 0
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if d == "[DONE]" {
			done = true
			break
		}
		var c struct {
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Error any `json:"error"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("event %q: %v", d, err)
		}
		if c.Error != nil {
			t.Fatalf("error in stream: %s", d)
		}
		for _, ch := range c.Choices {
			if ch.Text != "" {
				text += ch.Text
				n++
				if each != nil {
					each(n)
				}
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if !done {
		t.Fatalf("stream ended without [DONE] after %q", text)
	}
	return text, finish
}
