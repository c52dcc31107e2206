// Package transport moves KV-cache blocks from a prefill worker (the sender)
// to a decode worker (the receiver), shaped like an RDMA one-sided write.
//
// The model: each agent registers its KV memory once (a Memory: one block
// array per layer) and describes it in a Descriptor that peers exchange at
// handshake; two agents talk only when their descriptors are Compatible. The
// receiver owns destination blocks. A sender asks it to Reserve n blocks for
// a transfer, presenting the Grant the placement issued (transfer id, epoch,
// expiry and an HMAC token over them); the receiver allocates the blocks from
// its BlockAllocator and holds them under a Lease that expires unless renewed.
// The sender then opens one ordered stream per transfer and pushes
// (source block, destination block) pairs layer by layer, each layer as soon
// as prefill has computed it. Chunks carry a CRC32C; the stream's last frame
// is a Commit, and the receiver's answer travels back on the same stream, so
// data and completion can never be separated.
//
// Lease protocol: a lease is Reserved, then Streaming while a stream is open,
// then Ready once every layer arrived and was verified, and finally either
// Claimed (the receiver's owner took the blocks with Ready) or Freed (expiry,
// cancel or failure returned them to the allocator). Each lease reaches a
// final state exactly once, and a write is applied only while the lease is
// live and its epoch matches, under the lease's lock, so a late write from a
// stale transfer can never land in blocks that were freed and reused.
//
// A backend whose sender writes destination blocks itself (shared memory
// mapped by both processes; RDMA) cannot rely on the lease lock: the
// receiver then guards the blocks with a Fence, arming a lease's blocks with
// its key at Reserve and disarming them at commit and whenever the lease
// ends, and such a stream is opened with OpenInPlace. Such a sender commits
// one-sided, by sealing the lease at the fence after its last write; the
// receiver settles the seal before it ends a lease, so the commit and the
// lease's end cannot both happen.
//
// Backends implement Conn and Stream: grpcx (bidirectional gRPC streaming
// over mutual TLS), shm (in-place writes into the receiver's memfd-backed KV
// cache, or a staging segment, with a unix-socket control channel, for peers
// on one host) and inproc (direct calls, for tests). The receiving half of
// every backend feeds the same Receiver, so the checks above are written once.
package transport
