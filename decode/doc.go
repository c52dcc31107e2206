// Package decode is the decode worker: it owns a continuous batch and a KV
// cache, and generates the tokens of sequences whose prompts were prefilled
// elsewhere.
//
// The model (docs/request-lifecycle.md): the gateway opens Attach first; the
// prefill worker, once it schedules the request, reserves destination blocks
// here through the KV transport under a lease, pushes the prompt's KV layer by
// layer and commits on the same ordered stream. Attach waits for the transfer
// to be Ready (every layer verified), takes ownership of the blocks, and
// admits the sequence into the engine with the first token (computed by the
// prefill) as its first input, then streams every following token. The blocks
// belong to this worker from Reserve on and are freed exactly once: by the
// engine when the sequence finishes or is cancelled, or by the transport's
// receiver when the lease expires or the transfer fails. A decode worker also
// serves Run, the colocated path, which a gateway uses when it runs without
// prefill workers and to resume a request whose decode worker died.
package decode
