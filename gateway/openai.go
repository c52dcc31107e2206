package gateway

import (
	"encoding/json"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// stringList is a JSON string or array of strings ("stop").
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fieldErr("stop", "must be a string or an array of strings")
	}
	*s = many
	return nil
}

// promptField is a completion prompt: a string, an array of one string, or
// an array of token ids.
type promptField struct {
	text   string
	tokens []int32
}

func (p *promptField) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &p.text); err == nil {
		return nil
	}
	var texts []string
	if err := json.Unmarshal(b, &texts); err == nil {
		if len(texts) != 1 {
			return fieldErr("prompt", "must hold exactly one prompt, got %d", len(texts))
		}
		p.text = texts[0]
		return nil
	}
	if err := json.Unmarshal(b, &p.tokens); err != nil {
		return fieldErr("prompt", "must be a string, an array of one string or an array of token ids")
	}
	return nil
}

// contentField is a chat message's content: a string or an array of text parts.
type contentField string

func (c *contentField) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = contentField(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return fieldErr("messages.content", "must be a string or an array of text parts")
	}
	var out string
	for _, p := range parts {
		if p.Type != "text" {
			return fieldErr("messages.content", "part type %q is not supported", p.Type)
		}
		out += p.Text
	}
	*c = contentField(out)
	return nil
}

// samplingFields are the OpenAI sampling fields both endpoints share, plus
// the common extensions (top_k, min_p, repetition_penalty, ignore_eos).
type samplingFields struct {
	Model               string      `json:"model"`
	MaxTokens           *int        `json:"max_tokens"`
	MaxCompletionTokens *int        `json:"max_completion_tokens"`
	Temperature         *float32    `json:"temperature"`
	TopP                *float32    `json:"top_p"`
	TopK                *int        `json:"top_k"`
	MinP                *float32    `json:"min_p"`
	RepetitionPenalty   *float32    `json:"repetition_penalty"`
	FrequencyPenalty    *float32    `json:"frequency_penalty"`
	PresencePenalty     *float32    `json:"presence_penalty"`
	Seed                *int64      `json:"seed"`
	Stop                stringList  `json:"stop"`
	N                   *int        `json:"n"`
	Stream              bool        `json:"stream"`
	StreamOptions       *streamOpts `json:"stream_options"`
	IgnoreEOS           bool        `json:"ignore_eos"`
	Logprobs            any         `json:"logprobs"`
	User                string      `json:"user"`
}

type streamOpts struct {
	IncludeUsage bool `json:"include_usage"`
}

type completionRequest struct {
	samplingFields
	Prompt *promptField `json:"prompt"`
	Echo   bool         `json:"echo"`
}

type chatRequest struct {
	samplingFields
	Messages []struct {
		Role    string       `json:"role"`
		Content contentField `json:"content"`
	} `json:"messages"`
	// Features the server does not implement are refused rather than
	// silently ignored, so a client never mistakes plain text for them.
	Tools          []json.RawMessage `json:"tools"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

// params converts the shared fields; validation of ranges happens in
// Gateway.prepare, which names the field.
func (f *samplingFields) params() (sample.Params, error) {
	p := sample.DefaultParams()
	p.MaxTokens = 0
	if f.N != nil && *f.N != 1 {
		return p, fieldErr("n", "only n=1 is supported, got %d", *f.N)
	}
	if f.Logprobs != nil && f.Logprobs != false {
		return p, fieldErr("logprobs", "log probabilities are not supported")
	}
	if f.StreamOptions != nil && !f.Stream {
		return p, fieldErr("stream_options", "only allowed with stream=true")
	}
	switch {
	case f.MaxCompletionTokens != nil:
		if *f.MaxCompletionTokens <= 0 {
			return p, fieldErr("max_completion_tokens", "must be positive, got %d", *f.MaxCompletionTokens)
		}
		p.MaxTokens = *f.MaxCompletionTokens
	case f.MaxTokens != nil:
		if *f.MaxTokens <= 0 {
			return p, fieldErr("max_tokens", "must be positive, got %d", *f.MaxTokens)
		}
		p.MaxTokens = *f.MaxTokens
	}
	// OpenAI's default temperature is 1; Tandem's API defaults to greedy so
	// that an unparameterised request is reproducible.
	if f.Temperature != nil {
		p.Temperature = *f.Temperature
	}
	if f.TopP != nil {
		p.TopP = *f.TopP
	}
	if f.TopK != nil {
		p.TopK = *f.TopK
	}
	if f.MinP != nil {
		p.MinP = *f.MinP
	}
	if f.RepetitionPenalty != nil {
		p.RepetitionPenalty = *f.RepetitionPenalty
	}
	if f.FrequencyPenalty != nil {
		p.FrequencyPenalty = *f.FrequencyPenalty
	}
	if f.PresencePenalty != nil {
		p.PresencePenalty = *f.PresencePenalty
	}
	if f.Seed != nil {
		p.Seed, p.HasSeed = uint64(*f.Seed), true
	}
	p.Stop = f.Stop
	p.IgnoreEOS = f.IgnoreEOS
	return p, nil
}

func (r *completionRequest) input() (Input, error) {
	p, err := r.params()
	if err != nil {
		return Input{}, err
	}
	if r.Prompt == nil {
		return Input{}, fieldErr("prompt", "is required")
	}
	if r.Echo {
		return Input{}, fieldErr("echo", "echo is not supported")
	}
	return Input{Model: r.Model, Prompt: r.Prompt.text, PromptTokens: r.Prompt.tokens, Params: p}, nil
}

func (r *chatRequest) input() (Input, error) {
	p, err := r.params()
	if err != nil {
		return Input{}, err
	}
	if len(r.Messages) == 0 {
		return Input{}, fieldErr("messages", "at least one message is required")
	}
	if len(r.Tools) > 0 {
		return Input{}, fieldErr("tools", "tool calling is not supported")
	}
	if r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text" {
		return Input{}, fieldErr("response_format", "only type \"text\" is supported, got %q", r.ResponseFormat.Type)
	}
	msgs := make([]tokenizer.Message, len(r.Messages))
	for i, m := range r.Messages {
		msgs[i] = tokenizer.Message{Role: m.Role, Content: string(m.Content)}
	}
	return Input{Model: r.Model, Messages: msgs, Params: p}, nil
}

// Response shapes.

type usageJSON struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func usageOf(r Result) *usageJSON {
	return &usageJSON{PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, TotalTokens: r.PromptTokens + r.CompletionTokens}
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type chatMessageJSON struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      *chatMessageJSON `json:"message,omitempty"`
	Delta        *chatMessageJSON `json:"delta,omitempty"`
	Logprobs     any              `json:"logprobs"`
	FinishReason *string          `json:"finish_reason"`
}

type responseJSON struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []any      `json:"choices"`
	Usage   *usageJSON `json:"usage,omitempty"`
}

type errorJSON struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}
