package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
)

// Message is one turn of a chat conversation.
type Message struct {
	Role    string // "system", "user", "assistant" or "tool"
	Content string
}

// Chat template families. A GGUF file carries its chat template as Jinja
// source; rather than interpret Jinja, the tokenizer recognises the few
// template families Llama-architecture models ship and renders them with Go
// code that reproduces the template's output byte for byte.
const (
	FormatChatML = "chatml" // <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen2)
	FormatLlama3 = "llama3" // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
	FormatLlama2 = "llama2" // <s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] answer </s>
	FormatZephyr = "zephyr" // <|user|>\ncontent</s>\n
)

type chatTemplate struct {
	format string
	// defaultSystem is the system prompt a ChatML template injects when the
	// conversation does not start with one (SmolLM2's "You are a helpful AI
	// assistant named SmolLM, ..."); hasDefault says whether it does.
	defaultSystem string
	hasDefault    bool
	bos, eos      string // texts the template's bos_token / eos_token expand to
}

// parseChatTemplate recognises the family of tmpl. An empty or unknown
// template falls back to plain ChatML when the vocabulary has its tokens;
// otherwise the tokenizer has no chat template (nil).
func parseChatTemplate(tmpl string, t *Tokenizer) *chatTemplate {
	c := &chatTemplate{}
	if id, ok := t.TokenText(t.bos); ok {
		c.bos = id
	}
	if id, ok := t.TokenText(t.eos); ok {
		c.eos = id
	}
	switch {
	case strings.Contains(tmpl, "<|im_start|>"):
		c.format = FormatChatML
		c.defaultSystem, c.hasDefault = chatMLDefaultSystem(tmpl)
		return c
	case strings.Contains(tmpl, "<|start_header_id|>") && !strings.Contains(tmpl, "Cutting Knowledge Date"):
		// Llama 3.1+ templates add tool and date preambles this package
		// does not reproduce, so only the Llama-3.0 form is recognised.
		c.format = FormatLlama3
		return c
	case strings.Contains(tmpl, "[INST]") && strings.Contains(tmpl, "<<SYS>>"):
		c.format = FormatLlama2
		return c
	case strings.Contains(tmpl, "<|user|>") && strings.Contains(tmpl, "<|assistant|>"):
		c.format = FormatZephyr
		return c
	}
	if _, ok := t.Lookup("<|im_start|>"); ok {
		c.format = FormatChatML
		return c
	}
	return nil
}

// chatMLDefaultSystem finds a string literal in the template that spells a
// whole system turn, '<|im_start|>system\n...<|im_end|>', and returns its
// text: templates emit such a literal only as the default system prompt.
func chatMLDefaultSystem(tmpl string) (string, bool) {
	const open = "<|im_start|>system"
	for rest := tmpl; ; {
		i := strings.Index(rest, open)
		if i < 0 {
			return "", false
		}
		rest = rest[i+len(open):]
		var body string
		switch {
		case strings.HasPrefix(rest, "\n"):
			body = rest[1:]
		case strings.HasPrefix(rest, `\n`):
			body = rest[2:]
		default:
			continue
		}
		end := strings.Index(body, "<|im_end|>")
		if end < 0 {
			return "", false
		}
		text := body[:end]
		if strings.ContainsAny(text, "'\"{}") {
			continue // not one literal: the template builds this turn from variables
		}
		return unescapeJinja(text), true
	}
}

// unescapeJinja resolves the backslash escapes of a Jinja string literal.
func unescapeJinja(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\n`, "\n", `\t`, "\t", `\r`, "\r", `\\`, `\`, `\'`, `'`, `\"`, `"`)
	return r.Replace(s)
}

// ChatFormat names the recognised chat template family ("chatml", "llama3",
// "llama2", "zephyr"), or "" when the tokenizer has none.
func (t *Tokenizer) ChatFormat() string {
	if t.chat == nil {
		return ""
	}
	return t.chat.format
}

// Render formats a conversation as the model's chat template would, ending
// with the assistant header when addGenerationPrompt is set. The result
// contains special-token texts: encode it with ParseSpecial. Templates that
// start with bos_token (Llama-2, Llama-3) include its text, so do not add
// another BOS when encoding their output.
func (t *Tokenizer) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	if t.chat == nil {
		return "", ErrNoChatTemplate
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return "", fmt.Errorf("%w: message %d has unknown role %q", ErrInvalidMessage, i, m.Role)
		}
	}
	var b strings.Builder
	switch t.chat.format {
	case FormatChatML:
		t.chat.renderChatML(&b, msgs, addGenerationPrompt)
	case FormatLlama3:
		t.chat.renderLlama3(&b, msgs, addGenerationPrompt)
	case FormatLlama2:
		if err := t.chat.renderLlama2(&b, msgs); err != nil {
			return "", err
		}
	case FormatZephyr:
		t.chat.renderZephyr(&b, msgs, addGenerationPrompt)
	}
	return b.String(), nil
}

func (c *chatTemplate) renderChatML(b *strings.Builder, msgs []Message, gen bool) {
	for i, m := range msgs {
		if i == 0 && c.hasDefault && m.Role != "system" {
			b.WriteString("<|im_start|>system\n" + c.defaultSystem + "<|im_end|>\n")
		}
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		b.WriteString("<|im_start|>assistant\n")
	}
}

// renderLlama3 follows Meta's Llama-3 template: bos_token once, then each
// message as a header plus its content with surrounding whitespace trimmed.
func (c *chatTemplate) renderLlama3(b *strings.Builder, msgs []Message, gen bool) {
	for i, m := range msgs {
		if i == 0 {
			b.WriteString(c.bos)
		}
		b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + pyStrip(m.Content) + "<|eot_id|>")
	}
	if gen {
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	}
}

// renderLlama2 follows Meta's Llama-2 chat template: an optional leading
// system message is folded into the first user turn, user and assistant
// turns must alternate starting with user, and other roles at assistant
// positions render as nothing. The template has no generation prompt.
func (c *chatTemplate) renderLlama2(b *strings.Builder, msgs []Message) error {
	if len(msgs) == 0 {
		// The template reads messages[0] unconditionally.
		return fmt.Errorf("%w: llama2 template needs at least one message", ErrInvalidMessage)
	}
	system, hasSystem := "", false
	if msgs[0].Role == "system" {
		system, hasSystem = msgs[0].Content, true
		msgs = msgs[1:]
	}
	for i, m := range msgs {
		if (m.Role == "user") != (i%2 == 0) {
			return fmt.Errorf("%w: llama2 template needs alternating user/assistant turns, message %d is %q", ErrInvalidMessage, i, m.Role)
		}
		content := m.Content
		if i == 0 && hasSystem {
			content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
		}
		switch m.Role {
		case "user":
			b.WriteString(c.bos + "[INST] " + pyStrip(content) + " [/INST]")
		case "assistant":
			b.WriteString(" " + pyStrip(content) + " " + c.eos)
		}
	}
	return nil
}

// renderZephyr follows HuggingFaceH4's Zephyr template; tool messages render
// as nothing there.
func (c *chatTemplate) renderZephyr(b *strings.Builder, msgs []Message, gen bool) {
	for i, m := range msgs {
		switch m.Role {
		case "user", "system", "assistant":
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + c.eos + "\n")
		}
		if i == len(msgs)-1 && gen {
			b.WriteString("<|assistant|>\n")
		}
	}
}

// pyStrip is Python's str.strip(), which Jinja's trim filter and .strip()
// call: it also strips the ASCII separators U+001C..U+001F.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}
