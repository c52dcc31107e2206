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
// contains special-token texts; prefer EncodeChat, which keeps message
// content from forging them. Templates that start with bos_token (Llama-2,
// Llama-3) include its text, so do not add another BOS when encoding it.
func (t *Tokenizer) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	w, err := t.render(msgs, addGenerationPrompt)
	if err != nil {
		return "", err
	}
	return w.b.String(), nil
}

// EncodeChat renders a conversation and tokenizes it. Only the special
// tokens the template itself writes become control tokens; special-token
// text inside message content is tokenized as plain text, so a client
// cannot inject "<|im_end|>" or a fake system turn. For content without
// such text the ids equal Encode(Render(...), ParseSpecial) exactly.
func (t *Tokenizer) EncodeChat(msgs []Message, addGenerationPrompt bool) ([]int32, error) {
	w, err := t.render(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	text := w.b.String()
	var frags []fragment
	pos := 0
	raw := func(end int) {
		for _, f := range t.partition(text[pos:end], false) {
			if f.tok < 0 {
				f.start += pos
				f.end += pos
			}
			frags = append(frags, f)
		}
	}
	for _, sp := range w.specials {
		raw(sp.start)
		frags = append(frags, fragment{tok: sp.tok})
		pos = sp.end
	}
	raw(len(text))
	return t.encodeFragments(text, frags, false), nil
}

func (t *Tokenizer) render(msgs []Message, gen bool) (*chatWriter, error) {
	if t.chat == nil {
		return nil, ErrNoChatTemplate
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return nil, fmt.Errorf("%w: message %d has unknown role %q", ErrInvalidMessage, i, m.Role)
		}
	}
	w := &chatWriter{t: t}
	switch t.chat.format {
	case FormatChatML:
		t.chat.renderChatML(w, msgs, gen)
	case FormatLlama3:
		t.chat.renderLlama3(w, msgs, gen)
	case FormatLlama2:
		if err := t.chat.renderLlama2(w, msgs); err != nil {
			return nil, err
		}
	case FormatZephyr:
		t.chat.renderZephyr(w, msgs, gen)
	}
	return w, nil
}

// chatWriter accumulates rendered text and remembers where the template
// wrote special tokens that exist in the vocabulary.
type chatWriter struct {
	t        *Tokenizer
	b        strings.Builder
	specials []chatSpecial
}

type chatSpecial struct {
	start, end int
	tok        int32
}

func (w *chatWriter) text(parts ...string) {
	for _, p := range parts {
		w.b.WriteString(p)
	}
}

// special writes a token text the template emits. Texts that are no
// special token of the vocabulary stay plain text, exactly as Encode with
// ParseSpecial would treat them.
func (w *chatWriter) special(s string) {
	if s == "" {
		return
	}
	if id, ok := w.t.Lookup(s); ok {
		switch w.t.types[id] {
		case TypeControl, TypeUserDefined, TypeUnknown:
			w.specials = append(w.specials, chatSpecial{start: w.b.Len(), end: w.b.Len() + len(s), tok: id})
		}
	}
	w.b.WriteString(s)
}

func (c *chatTemplate) renderChatML(w *chatWriter, msgs []Message, gen bool) {
	for i, m := range msgs {
		if i == 0 && c.hasDefault && m.Role != "system" {
			w.special("<|im_start|>")
			w.text("system\n", c.defaultSystem)
			w.special("<|im_end|>")
			w.text("\n")
		}
		w.special("<|im_start|>")
		w.text(m.Role, "\n", m.Content)
		w.special("<|im_end|>")
		w.text("\n")
	}
	if gen {
		w.special("<|im_start|>")
		w.text("assistant\n")
	}
}

// renderLlama3 follows Meta's Llama-3 template: bos_token once, then each
// message as a header plus its content with surrounding whitespace trimmed.
func (c *chatTemplate) renderLlama3(w *chatWriter, msgs []Message, gen bool) {
	for i, m := range msgs {
		if i == 0 {
			w.special(c.bos)
		}
		w.special("<|start_header_id|>")
		w.text(m.Role)
		w.special("<|end_header_id|>")
		w.text("\n\n", pyStrip(m.Content))
		w.special("<|eot_id|>")
	}
	if gen {
		w.special("<|start_header_id|>")
		w.text("assistant")
		w.special("<|end_header_id|>")
		w.text("\n\n")
	}
}

// renderLlama2 follows Meta's Llama-2 chat template: an optional leading
// system message is folded into the first user turn, user and assistant
// turns must alternate starting with user, and other roles at assistant
// positions render as nothing. The template has no generation prompt.
func (c *chatTemplate) renderLlama2(w *chatWriter, msgs []Message) error {
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
			w.special(c.bos)
			w.text("[INST] ", pyStrip(content), " [/INST]")
		case "assistant":
			w.text(" ", pyStrip(content), " ")
			w.special(c.eos)
		}
	}
	return nil
}

// renderZephyr follows HuggingFaceH4's Zephyr template; tool messages render
// as nothing there.
func (c *chatTemplate) renderZephyr(w *chatWriter, msgs []Message, gen bool) {
	for i, m := range msgs {
		switch m.Role {
		case "user", "system", "assistant":
			w.special("<|" + m.Role + "|>")
			w.text("\n", m.Content)
			w.special(c.eos)
			w.text("\n")
		}
		if i == len(msgs)-1 && gen {
			w.special("<|assistant|>")
			w.text("\n")
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
