package main

import (
	"context"
	"os"

	"github.com/tandemserve/tandem/coordinator/daemon"
)

// runCoordinator runs `tandem coordinator`: one Raft coordinator node. See
// `tandem coordinator -h` and docs/operations.md for flags and the three-node walkthrough.
func runCoordinator(ctx context.Context, args []string) error {
	return daemon.Run(ctx, args, os.Stderr)
}
