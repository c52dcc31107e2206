// Package gateway is Tandem's front door: the public gRPC Inference service
// and an OpenAI-compatible HTTP API over the same core.
//
// The model: a request is authenticated (API keys compared in constant
// time), validated (every bad parameter is reported with its field name),
// rendered through the model's chat template and tokenized here, so workers
// only ever see token ids. It is then admitted against a limit on the tokens
// of all unfinished requests (prompt plus max_tokens): past the limit the
// gateway sheds load with 429 / ResourceExhausted instead of queueing without
// bound. A Router runs the admitted request on the workers: Colocated sends it
// whole to one worker that prefills and decodes; Disaggregated attaches a
// decode worker, has a prefill worker compute the prompt's KV and push it
// there, and resumes on another decode worker if its worker dies mid-stream.
// The gateway turns the token stream into text incrementally (complete UTF-8
// only, stop strings held back until they cannot match) and measures time to
// first token, inter-token and end-to-end latency. A client that goes away
// cancels the request's context, which cancels every worker leg.
package gateway
