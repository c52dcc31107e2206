// Package worker is the plumbing every Tandem worker process shares: it wraps
// one engine.Engine behind the tandem.v1.Worker gRPC service, converts
// sampling parameters between protobuf and engine/sample, and gives gateways a
// Client that streams a request's tokens from a worker.
//
// The model: a worker owns one model and one engine. Run admits a request into
// the engine's continuous batch and streams every generated token as a
// TokenEvent; the stream's last event carries the finish reason. The request
// lives exactly as long as the RPC: when the caller goes away, the RPC context
// ends, the engine cancels the request and frees its blocks. Prefill and decode
// workers (packages prefill and decode) extend Server with the disaggregated
// legs; a colocated worker serves Run alone and does its own chunked prefill.
package worker
