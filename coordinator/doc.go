// Package coordinator is Tandem's control plane: a small Raft group (1, 3 or 5 voters) that owns the
// cluster's authoritative state and, on its leader, places every request on a prefill and a decode
// worker.
//
// What is replicated (through the Raft log, see package fsm): node identities, inventories and
// states (active, draining, drained, dead), models and their pools, and the placement policy. What
// is not: load reports, prefix-cache summaries and individual placements. Those are soft state on
// the leader, rebuilt within one load-report interval after a failover; putting each placement
// through the log would cost a disk sync and a quorum round trip per request for data nobody needs
// after the request ends. Stale placements are fenced instead: each carries the leader's Raft term
// inside a signed transfer token, so a worker refuses a transfer from a deposed leader.
//
// Liveness comes from gossip (package membership) across coordinators and workers; the leader turns
// gossip deaths and recoveries into Raft commands, and leader-only work (liveness reconciliation,
// drain completion, placement) runs in a loop that starts and stops with raft.LeaderCh.
package coordinator
