package placement_test

import (
	"fmt"

	"github.com/tandemserve/tandem/coordinator/placement"
)

// The policy from docs/operations.md (Coordinator) parses and builds.
func ExampleRegistry_Build() {
	spec, err := placement.ParseSpec([]byte(`
{"prefill": {"scorers": [{"name": "prefix-cache", "weight": 2}, {"name": "load"}],
             "picker": {"name": "max-score"}},
 "decode":  {"filters": [{"name": "kv-capacity"}, {"name": "queue-limit", "params": {"max_queue": 32}}],
             "scorers": [{"name": "kv-capacity"}, {"name": "load"}],
             "picker": {"name": "max-score"}},
 "decider": {"name": "uncached-threshold", "params": {"min_uncached_tokens": 512}}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := placement.NewRegistry().Build(spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := placement.Request{Model: "m", PromptTokens: 2048, BlockTokens: 16}
	res, err := p.Place(&r,
		[]placement.Candidate{{ID: "p1", Role: placement.RolePrefill}},
		[]placement.Candidate{{ID: "d1", Role: placement.RoleDecode}})
	fmt.Println(res.Prefill.ID, res.Decode.ID, err)
	// Output: p1 d1 <nil>
}
