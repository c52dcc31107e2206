package worker

import (
	"errors"
	"fmt"

	"github.com/tandemserve/tandem/engine/sample"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

var (
	// ErrInvalidRequest reports a request the worker refuses before running it.
	ErrInvalidRequest = errors.New("worker: invalid request")
	// ErrWrongModel reports a request for a model this worker does not serve.
	ErrWrongModel = errors.New("worker: model not served here")
	// ErrInvalidConfig reports a bad EngineConfig.
	ErrInvalidConfig = errors.New("worker: invalid config")
	// ErrStreamEnded reports a worker stream that ended without a finish event.
	ErrStreamEnded = errors.New("worker: stream ended without a finish reason")
)

// ParamsFromProto converts wire sampling parameters. Absent parameters give
// sample.DefaultParams with maxTokens; a zero max_tokens takes maxTokens too.
func ParamsFromProto(p *tandemv1.SamplingParams, maxTokens int) sample.Params {
	out := sample.DefaultParams()
	out.MaxTokens = maxTokens
	if p == nil {
		return out
	}
	out.Temperature = p.GetTemperature()
	out.TopK = int(p.GetTopK())
	out.TopP = p.GetTopP()
	if out.TopP == 0 {
		out.TopP = 1
	}
	out.MinP = p.GetMinP()
	out.RepetitionPenalty = p.GetRepetitionPenalty()
	if out.RepetitionPenalty == 0 {
		out.RepetitionPenalty = 1
	}
	out.RepeatLastN = int(p.GetRepeatLastN())
	out.FrequencyPenalty = p.GetFrequencyPenalty()
	out.PresencePenalty = p.GetPresencePenalty()
	if p.Seed != nil {
		out.Seed, out.HasSeed = p.GetSeed(), true
	}
	if p.GetMaxTokens() != 0 {
		out.MaxTokens = int(p.GetMaxTokens())
	}
	out.Stop = append([]string(nil), p.GetStop()...)
	out.StopTokenIDs = append([]int32(nil), p.GetStopTokenIds()...)
	out.IgnoreEOS = p.GetIgnoreEos()
	return out
}

// ParamsToProto is the inverse of ParamsFromProto.
func ParamsToProto(p sample.Params) *tandemv1.SamplingParams {
	out := &tandemv1.SamplingParams{
		Temperature: p.Temperature, TopK: int32(p.TopK), TopP: p.TopP, MinP: p.MinP,
		RepetitionPenalty: p.RepetitionPenalty, RepeatLastN: int32(p.RepeatLastN),
		FrequencyPenalty: p.FrequencyPenalty, PresencePenalty: p.PresencePenalty,
		MaxTokens: int32(p.MaxTokens), Stop: append([]string(nil), p.Stop...),
		StopTokenIds: append([]int32(nil), p.StopTokenIDs...), IgnoreEos: p.IgnoreEOS,
	}
	if p.HasSeed {
		seed := p.Seed
		out.Seed = &seed
	}
	return out
}

// checkRun validates the parts of a RunRequest the engine does not.
func checkRun(req *tandemv1.RunRequest, model string) error {
	if req.GetModel() != "" && req.GetModel() != model {
		return fmt.Errorf("%w: %q (serving %q)", ErrWrongModel, req.GetModel(), model)
	}
	if len(req.GetTokens()) == 0 {
		return fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	}
	if g := req.GetGenerated(); g < 0 || int(g) >= len(req.GetTokens()) {
		return fmt.Errorf("%w: generated %d of %d tokens", ErrInvalidRequest, g, len(req.GetTokens()))
	}
	if req.GetSampling().GetMaxTokens() <= 0 {
		return fmt.Errorf("%w: max_tokens %d", ErrInvalidRequest, req.GetSampling().GetMaxTokens())
	}
	return nil
}
