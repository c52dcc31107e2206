package placement

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
)

// PluginSpec names a plugin and its parameters.
type PluginSpec struct {
	Name   string          `json:"name"`
	Weight float64         `json:"weight,omitempty"` // scorers only; 0 means 1
	Params json.RawMessage `json:"params,omitempty"`
}

// ProfileSpec configures one role's pipeline.
type ProfileSpec struct {
	Filters []PluginSpec `json:"filters,omitempty"`
	Scorers []PluginSpec `json:"scorers,omitempty"`
	Picker  PluginSpec   `json:"picker"`
}

// PolicySpec is the whole policy as stored in the replicated state and shown by `tandemctl policy`.
type PolicySpec struct {
	Prefill ProfileSpec `json:"prefill"`
	Decode  ProfileSpec `json:"decode"`
	Decider PluginSpec  `json:"decider"`
}

// DefaultSpec is the policy a fresh cluster uses: load- and prefix-aware prefill, KV-capacity- and
// load-aware decode, and remote prefill only when at least 256 prompt tokens are not already
// cached on the decode worker.
func DefaultSpec() PolicySpec {
	return PolicySpec{
		Prefill: ProfileSpec{
			Scorers: []PluginSpec{{Name: "prefix-cache", Weight: 2}, {Name: "load", Weight: 1}},
			Picker:  PluginSpec{Name: "max-score"},
		},
		Decode: ProfileSpec{
			Filters: []PluginSpec{{Name: "kv-capacity"}},
			Scorers: []PluginSpec{{Name: "kv-capacity", Weight: 1}, {Name: "load", Weight: 1}, {Name: "prefix-cache", Weight: 0.5}},
			Picker:  PluginSpec{Name: "max-score"},
		},
		Decider: PluginSpec{Name: "uncached-threshold", Params: json.RawMessage(`{"min_uncached_tokens":256}`)},
	}
}

// ParseSpec decodes a policy strictly: unknown fields are errors, so a typo in a plugin parameter
// is reported instead of silently ignored.
func ParseSpec(b []byte) (PolicySpec, error) {
	var s PolicySpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return PolicySpec{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if dec.More() {
		return PolicySpec{}, fmt.Errorf("%w: trailing data after policy", ErrConfig)
	}
	return s, nil
}

// decodeParams decodes plugin parameters strictly into v; empty params leave v's defaults.
func decodeParams(name string, raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: plugin %q params: %w", ErrConfig, name, err)
	}
	return nil
}

// Factories build a plugin from its parameters.
type (
	FilterFactory  func(params json.RawMessage) (Filter, error)
	ScorerFactory  func(params json.RawMessage) (Scorer, error)
	PickerFactory  func(params json.RawMessage) (Picker, error)
	DeciderFactory func(params json.RawMessage) (Decider, error)
)

// Registry maps plugin names to factories. It is built per use (no package-level registry), so a
// test or an embedding program can add plugins without affecting anyone else.
type Registry struct {
	filters  map[string]FilterFactory
	scorers  map[string]ScorerFactory
	pickers  map[string]PickerFactory
	deciders map[string]DeciderFactory
}

// NewRegistry returns a registry holding the built-in plugins.
func NewRegistry() *Registry {
	r := &Registry{
		filters:  map[string]FilterFactory{},
		scorers:  map[string]ScorerFactory{},
		pickers:  map[string]PickerFactory{},
		deciders: map[string]DeciderFactory{},
	}
	r.filters["kv-capacity"] = newKVCapacityFilter
	r.filters["queue-limit"] = newQueueLimitFilter
	r.scorers["load"] = newLoadScorer
	r.scorers["prefix-cache"] = newPrefixScorer
	r.scorers["kv-capacity"] = newKVCapacityScorer
	r.pickers["max-score"] = newMaxScorePicker
	r.deciders["uncached-threshold"] = newThresholdDecider
	r.deciders["always-remote"] = func(json.RawMessage) (Decider, error) { return fixedDecider{remote: true}, nil }
	r.deciders["never-remote"] = func(json.RawMessage) (Decider, error) { return fixedDecider{remote: false}, nil }
	return r
}

// RegisterFilter adds or replaces a filter factory.
func (r *Registry) RegisterFilter(name string, f FilterFactory) { r.filters[name] = f }

// RegisterScorer adds or replaces a scorer factory.
func (r *Registry) RegisterScorer(name string, f ScorerFactory) { r.scorers[name] = f }

// RegisterPicker adds or replaces a picker factory.
func (r *Registry) RegisterPicker(name string, f PickerFactory) { r.pickers[name] = f }

// RegisterDecider adds or replaces a decider factory.
func (r *Registry) RegisterDecider(name string, f DeciderFactory) { r.deciders[name] = f }

// Names lists every registered plugin by kind, sorted, for help text and error messages.
func (r *Registry) Names() map[string][]string {
	keys := func(n int, each func(func(string))) []string {
		out := make([]string, 0, n)
		each(func(k string) { out = append(out, k) })
		sort.Strings(out)
		return out
	}
	return map[string][]string{
		"filter": keys(len(r.filters), func(f func(string)) {
			for k := range r.filters {
				f(k)
			}
		}),
		"scorer": keys(len(r.scorers), func(f func(string)) {
			for k := range r.scorers {
				f(k)
			}
		}),
		"picker": keys(len(r.pickers), func(f func(string)) {
			for k := range r.pickers {
				f(k)
			}
		}),
		"decider": keys(len(r.deciders), func(f func(string)) {
			for k := range r.deciders {
				f(k)
			}
		}),
	}
}

func lookup[F any](kind string, m map[string]F, name string) (F, error) {
	f, ok := m[name]
	if !ok {
		var zero F
		return zero, fmt.Errorf("%w: unknown %s %q", ErrConfig, kind, name)
	}
	return f, nil
}

// Build turns a spec into a pipeline.
func (r *Registry) Build(s PolicySpec) (*Pipeline, error) {
	pre, err := r.buildProfile("prefill", s.Prefill)
	if err != nil {
		return nil, err
	}
	dec, err := r.buildProfile("decode", s.Decode)
	if err != nil {
		return nil, err
	}
	df, err := lookup("decider", r.deciders, s.Decider.Name)
	if err != nil {
		return nil, err
	}
	d, err := df(s.Decider.Params)
	if err != nil {
		return nil, err
	}
	return &Pipeline{Prefill: pre, Decode: dec, Decider: d}, nil
}

func (r *Registry) buildProfile(role string, s ProfileSpec) (Profile, error) {
	var p Profile
	for _, fs := range s.Filters {
		ff, err := lookup("filter", r.filters, fs.Name)
		if err != nil {
			return p, fmt.Errorf("%s: %w", role, err)
		}
		f, err := ff(fs.Params)
		if err != nil {
			return p, fmt.Errorf("%s: %w", role, err)
		}
		p.Filters = append(p.Filters, f)
	}
	for _, ss := range s.Scorers {
		sf, err := lookup("scorer", r.scorers, ss.Name)
		if err != nil {
			return p, fmt.Errorf("%s: %w", role, err)
		}
		sc, err := sf(ss.Params)
		if err != nil {
			return p, fmt.Errorf("%s: %w", role, err)
		}
		w := ss.Weight
		if w < 0 || w != w {
			return p, fmt.Errorf("%w: %s: scorer %q has negative weight", ErrConfig, role, ss.Name)
		}
		if w == 0 {
			w = 1
		}
		p.Scorers = append(p.Scorers, WeightedScorer{Scorer: sc, Weight: w})
	}
	pf, err := lookup("picker", r.pickers, s.Picker.Name)
	if err != nil {
		return p, fmt.Errorf("%s: %w", role, err)
	}
	if p.Picker, err = pf(s.Picker.Params); err != nil {
		return p, fmt.Errorf("%s: %w", role, err)
	}
	return p, nil
}
